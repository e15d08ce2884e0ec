# C-level interface of the hash kernels, for the modules that cimport them (_ring, _select).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum Algorithm:
    ALGO_XXH64 = 0
    ALGO_MURMUR3 = 1
    ALGO_FNV1A64 = 2
    ALGO_MD5 = 3
    # The key hashes of other programs (ringkit.compat), 32-bit unless noted; never reachable
    # through hash64's algorithm= (parse_algorithm knows only the four above).
    PROG_ONE_AT_A_TIME = 16
    PROG_MD5 = 17            # the digest's first 4 bytes, little-endian (ketama's key hash)
    PROG_CRC16 = 18
    PROG_CRC32 = 19          # twemproxy "crc32" = libmemcached "crc": 15 bits of CRC-32
    PROG_CRC32A = 20
    PROG_FNV1_64 = 21
    PROG_FNV1A_64 = 22       # a 32-bit state, as both programs compute it
    PROG_FNV1_32 = 23
    PROG_FNV1A_32 = 24
    PROG_HSIEH = 25
    PROG_MURMUR = 26         # MurmurHash2 with a length seed
    PROG_JENKINS = 27        # lookup3 hashlittle, initval 13
    PROG_MD5_HIGH64 = 28     # 64 bits: the digest's first 8 bytes, big-endian (uhashring)
    PROGRAM_MASK = 0xFF
    # Key forms, or-ed into a program algorithm id: how keys that are not str become bytes.
    FORM_TEXT = 0x100        # int keys are hashed as str(key) (memcached clients send text)
    FORM_STR = 0x200         # every non-str key is hashed as str(key): b"ab" as "b'ab'"
    FORM_HASH_TAG = 0x400    # twemproxy hash_tag: the seed holds its two bytes (open << 8 | close)
    FORM_EMPTY_ZERO = 0x800  # an empty (hashed part of a) key hashes to 0, as twemproxy's does

cdef uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t xxh64_u64(uint64_t value, uint64_t seed) noexcept nogil
cdef uint64_t murmur3_64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t fnv1a64(const uint8_t* data, size_t length) noexcept nogil
cdef void md5_words(const uint8_t* data, size_t length, uint32_t* words) noexcept nogil
cdef uint32_t one_at_a_time(const uint8_t* data, size_t length) noexcept nogil
cdef uint32_t murmur3_32(const uint8_t* data, size_t length, uint32_t seed) noexcept nogil
cdef uint64_t hash_bytes(int algorithm, const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t hash_u64(int algorithm, uint64_t value, uint64_t seed) noexcept nogil

# Validated argument parsing shared by every module that takes algorithm= and seed=.
cdef int parse_algorithm(object algorithm) except -1
cdef uint64_t parse_seed(int algorithm, object seed) except? 0xFFFFFFFFFFFFFFFF

# The text a program hashes for a key that is not a str under FORM_TEXT / FORM_STR (str(key)), or
# None for a key hashed as it is (bytes-like under FORM_TEXT) or that no program takes.
cdef object program_text(object key, int algorithm, str argname)

# Hash one Python key (str, bytes-like, int); raises TypeError/ValueError/OverflowError naming `argname`.
cdef uint64_t hash_object(object key, int algorithm, uint64_t seed, str argname) except? 0xFFFFFFFFFFFFFFFF

# Hash a batch of keys of any supported kind into `out` (length already checked by the caller).
cdef int hash_batch(object keys, int algorithm, uint64_t seed, uint64_t* out, Py_ssize_t n,
                    str argname) except -1
# Normalise a batch (list, tuple, 1-d numpy array, pyarrow array; other iterables become lists) so
# that len() works on it; raise TypeError naming `argname` for anything that is not a batch of keys.
cdef object as_batch(object keys, str argname)

# Whether writing into `out` could change keys of `keys` (a numpy or pyarrow batch) before they
# are read.
cdef bint out_overlaps_keys(object out, object keys) except -1


cdef class KeyBlocks:
    """A batch's hashes a block at a time (see _hashing.pyx): after each next() that returns
    True, hashes[0:count] are the hashes of the keys start .. start + count - 1."""
    cdef object batch
    cdef object buffer
    cdef object chunks
    cdef object current         # the chunk's _ArrowStrings, when it has been read as one
    cdef bint prepared
    cdef int algorithm
    cdef uint64_t seed
    cdef str argname
    cdef Py_ssize_t n, chunk, chunk_start
    cdef readonly Py_ssize_t start, count
    cdef uint64_t* hashes
    cdef bint whole

    cdef bint next(self) except -1
    cdef int _hash_whole(self) except -1
    cdef object _strings_of(self, object chunk)
