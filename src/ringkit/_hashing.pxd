# C-level interface of the hash kernels, for the modules that cimport them (_ring, _select).
from libc.stdint cimport uint8_t, uint32_t, uint64_t

cdef enum Algorithm:
    ALGO_XXH64 = 0
    ALGO_MURMUR3 = 1
    ALGO_FNV1A64 = 2
    ALGO_MD5 = 3

cdef uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t xxh64_u64(uint64_t value, uint64_t seed) noexcept nogil
cdef uint64_t murmur3_64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t fnv1a64(const uint8_t* data, size_t length) noexcept nogil
cdef void md5_words(const uint8_t* data, size_t length, uint32_t* words) noexcept nogil
cdef uint64_t hash_bytes(int algorithm, const uint8_t* data, size_t length, uint64_t seed) noexcept nogil
cdef uint64_t hash_u64(int algorithm, uint64_t value, uint64_t seed) noexcept nogil

# Validated argument parsing shared by every module that takes algorithm= and seed=.
cdef int parse_algorithm(object algorithm) except -1
cdef uint64_t parse_seed(int algorithm, object seed) except? 0xFFFFFFFFFFFFFFFF

# Hash one Python key (str, bytes-like, int); raises TypeError/ValueError/OverflowError naming `argname`.
cdef uint64_t hash_object(object key, int algorithm, uint64_t seed, str argname) except? 0xFFFFFFFFFFFFFFFF

# Hash a batch of keys of any supported kind into `out` (length already checked by the caller).
cdef int hash_batch(object keys, int algorithm, uint64_t seed, uint64_t* out, Py_ssize_t n,
                    str argname) except -1
# Normalise a batch (list, tuple, 1-d numpy array, pyarrow array; other iterables become lists) so
# that len() works on it; raise TypeError naming `argname` for anything that is not a batch of keys.
cdef object as_batch(object keys, str argname)
