# cython: freethreading_compatible = True
"""Batch key-hashing kernels: xxh64, murmur3 (x64_128, first half), fnv1a64 and md5.

Written from the published algorithms (Collet's XXH64 specification, Appleby's MurmurHash3,
the FNV-1a definition of Fowler, Noll and Vo, and RFC 1321). Keys are hashed as bytes: str as
UTF-8, bytes-like as their bytes, int as 8 little-endian two's-complement bytes.

Beside them, the 32-bit key hashes of the programs that ringkit.compat routes like (twemproxy,
libmemcached, uhashring), as those programs compute them: not exposed through hash64, reached
through the program algorithm ids and key forms of _hashing.pxd.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cimport cython

from ringkit._arrays cimport checked_input, checked_output, overlaps, overlaps_range, refuse_masked

import numpy as np

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(_MSC_VER)
    #  include <stdlib.h>
    #  define RK_BSWAP64(x) _byteswap_uint64(x)
    #  define RK_BSWAP32(x) _byteswap_ulong(x)
    #else
    #  define RK_BSWAP64(x) __builtin_bswap64(x)
    #  define RK_BSWAP32(x) __builtin_bswap32(x)
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #  define RK_BIG_ENDIAN 1
    #else
    #  define RK_BIG_ENDIAN 0
    #endif
    /* Unaligned little-endian loads; memcpy compiles to a single mov. */
    static inline uint64_t rk_load64(const uint8_t *p) {
        uint64_t v; memcpy(&v, p, 8);
        return RK_BIG_ENDIAN ? RK_BSWAP64(v) : v;
    }
    static inline uint32_t rk_load32(const uint8_t *p) {
        uint32_t v; memcpy(&v, p, 4);
        return RK_BIG_ENDIAN ? RK_BSWAP32(v) : v;
    }
    static inline uint64_t rk_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    static inline uint32_t rk_rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
    #if defined(__GNUC__) || defined(__clang__)
    #  define rk_prefetch(p) __builtin_prefetch((const void *)(p))
    #else
    #  define rk_prefetch(p) ((void)(p))
    #endif
    /* 64-bit constants do not fit a C enum; keep them as compile-time macros. */
    #define RK_P64_1 0x9E3779B185EBCA87ULL
    #define RK_P64_2 0xC2B2AE3D27D4EB4FULL
    #define RK_P64_3 0x165667B19E3779F9ULL
    #define RK_P64_4 0x85EBCA77C2B2AE63ULL
    #define RK_P64_5 0x27D4EB2F165667C5ULL
    #define RK_M_C1 0x87C37B91114253D5ULL
    #define RK_M_C2 0x4CF5AD432745937FULL
    #define RK_FMIX_1 0xFF51AFD7ED558CCDULL
    #define RK_FMIX_2 0xC4CEB9FE1A85EC53ULL
    #define RK_FNV_OFFSET 0xCBF29CE484222325ULL
    #define RK_FNV_PRIME 0x100000001B3ULL
    """
    uint64_t rk_load64(const uint8_t* p) noexcept nogil
    uint32_t rk_load32(const uint8_t* p) noexcept nogil
    uint32_t RK_BSWAP32(uint32_t x) noexcept nogil
    uint64_t rk_rotl64(uint64_t x, int r) noexcept nogil
    uint32_t rk_rotl32(uint32_t x, int r) noexcept nogil
    void rk_prefetch(const void* p) noexcept nogil
    const uint64_t P64_1 "RK_P64_1"
    const uint64_t P64_2 "RK_P64_2"
    const uint64_t P64_3 "RK_P64_3"
    const uint64_t P64_4 "RK_P64_4"
    const uint64_t P64_5 "RK_P64_5"
    const uint64_t M_C1 "RK_M_C1"
    const uint64_t M_C2 "RK_M_C2"
    const uint64_t FMIX_1 "RK_FMIX_1"
    const uint64_t FMIX_2 "RK_FMIX_2"
    const uint64_t FNV_OFFSET "RK_FNV_OFFSET"
    const uint64_t FNV_PRIME "RK_FNV_PRIME"

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII_PTR "PyUnicode_IS_COMPACT_ASCII"(PyObject* o) noexcept nogil
    void* PyUnicode_DATA_PTR "PyUnicode_DATA"(PyObject* o) noexcept nogil
    Py_ssize_t PyUnicode_GET_LENGTH_PTR "PyUnicode_GET_LENGTH"(PyObject* o) noexcept nogil
    bint PyUnicode_CheckExact_PTR "PyUnicode_CheckExact"(PyObject* o) noexcept nogil
    PyObject** PySequence_Fast_ITEMS(object o)
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    bint PyUnicode_Check(object o)
    bint PyBytes_Check(object o)
    bint PyLong_Check(object o)
    bint PyIndex_Check(object o)
    bint PyObject_CheckBuffer(object o)

ALGORITHMS = ("xxh64", "murmur3", "fnv1a64", "md5")
cdef dict _ALGORITHM_IDS = {name: i for i, name in enumerate(ALGORITHMS)}
cdef uint64_t _SEED_LIMIT[4]
_SEED_LIMIT[:] = [0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF, 0, 0]


# --------------------------------------------------------------------------------------------------
# XXH64

cdef inline uint64_t _xxh_round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc = acc + lane * P64_2
    acc = rk_rotl64(acc, 31)
    return acc * P64_1

cdef inline uint64_t _xxh_merge(uint64_t acc, uint64_t v) noexcept nogil:
    acc = acc ^ _xxh_round(0, v)
    return acc * P64_1 + P64_4

cdef inline uint64_t _xxh_avalanche(uint64_t h) noexcept nogil:
    h = h ^ (h >> 33)
    h = h * P64_2
    h = h ^ (h >> 29)
    h = h * P64_3
    return h ^ (h >> 32)

cdef uint64_t xxh64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil:
    return _xxh64(data, length, seed)

cdef inline uint64_t _xxh64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil:
    cdef const uint8_t* p = data
    cdef const uint8_t* end = data + length
    cdef const uint8_t* limit
    cdef uint64_t v1, v2, v3, v4, h
    if length >= 32:
        limit = end - 32
        v1 = seed + P64_1 + P64_2
        v2 = seed + P64_2
        v3 = seed
        v4 = seed - P64_1
        while p <= limit:
            v1 = _xxh_round(v1, rk_load64(p))
            v2 = _xxh_round(v2, rk_load64(p + 8))
            v3 = _xxh_round(v3, rk_load64(p + 16))
            v4 = _xxh_round(v4, rk_load64(p + 24))
            p += 32
        h = rk_rotl64(v1, 1) + rk_rotl64(v2, 7) + rk_rotl64(v3, 12) + rk_rotl64(v4, 18)
        h = _xxh_merge(h, v1)
        h = _xxh_merge(h, v2)
        h = _xxh_merge(h, v3)
        h = _xxh_merge(h, v4)
    else:
        h = seed + P64_5
    h = h + <uint64_t>length
    while p + 8 <= end:
        h = h ^ _xxh_round(0, rk_load64(p))
        h = rk_rotl64(h, 27) * P64_1 + P64_4
        p += 8
    if p + 4 <= end:
        h = h ^ (<uint64_t>rk_load32(p) * P64_1)
        h = rk_rotl64(h, 23) * P64_2 + P64_3
        p += 4
    while p < end:
        h = h ^ (<uint64_t>p[0] * P64_5)
        h = rk_rotl64(h, 11) * P64_1
        p += 1
    return _xxh_avalanche(h)

cdef uint64_t xxh64_u64(uint64_t value, uint64_t seed) noexcept nogil:
    """xxh64 of the 8 little-endian bytes of `value` (the int key form), without a buffer."""
    cdef uint64_t h = seed + P64_5 + 8
    h = h ^ _xxh_round(0, value)
    h = rk_rotl64(h, 27) * P64_1 + P64_4
    return _xxh_avalanche(h)


# --------------------------------------------------------------------------------------------------
# MurmurHash3 x64_128, first 64-bit half

cdef inline uint64_t _fmix64(uint64_t k) noexcept nogil:
    k = k ^ (k >> 33)
    k = k * FMIX_1
    k = k ^ (k >> 33)
    k = k * FMIX_2
    return k ^ (k >> 33)

cdef uint64_t murmur3_64(const uint8_t* data, size_t length, uint64_t seed) noexcept nogil:
    cdef size_t nblocks = length // 16
    cdef size_t i
    cdef uint64_t h1 = seed
    cdef uint64_t h2 = seed
    cdef uint64_t k1, k2
    cdef const uint8_t* tail
    cdef size_t rest
    cdef Py_ssize_t j
    for i in range(nblocks):
        k1 = rk_load64(data + 16 * i)
        k2 = rk_load64(data + 16 * i + 8)
        k1 = k1 * M_C1
        k1 = rk_rotl64(k1, 31)
        k1 = k1 * M_C2
        h1 = h1 ^ k1
        h1 = rk_rotl64(h1, 27)
        h1 = h1 + h2
        h1 = h1 * 5 + <uint64_t>0x52DCE729
        k2 = k2 * M_C2
        k2 = rk_rotl64(k2, 33)
        k2 = k2 * M_C1
        h2 = h2 ^ k2
        h2 = rk_rotl64(h2, 31)
        h2 = h2 + h1
        h2 = h2 * 5 + <uint64_t>0x38495AB5
    tail = data + 16 * nblocks
    rest = length & 15
    k1 = 0
    k2 = 0
    # Tail bytes 8..14 feed k2 and bytes 0..7 feed k1, little-endian.
    if rest > 8:
        for j in range(<Py_ssize_t>rest - 1, 7, -1):
            k2 = (k2 << 8) | tail[j]
        k2 = k2 * M_C2
        k2 = rk_rotl64(k2, 33)
        k2 = k2 * M_C1
        h2 = h2 ^ k2
    if rest > 0:
        for j in range(<Py_ssize_t>(rest if rest < 8 else 8) - 1, -1, -1):
            k1 = (k1 << 8) | tail[j]
        k1 = k1 * M_C1
        k1 = rk_rotl64(k1, 31)
        k1 = k1 * M_C2
        h1 = h1 ^ k1
    h1 = h1 ^ <uint64_t>length
    h2 = h2 ^ <uint64_t>length
    h1 = h1 + h2
    h2 = h2 + h1
    h1 = _fmix64(h1)
    h2 = _fmix64(h2)
    h1 = h1 + h2
    return h1


# --------------------------------------------------------------------------------------------------
# FNV-1a, 64 bit

cdef uint64_t fnv1a64(const uint8_t* data, size_t length) noexcept nogil:
    cdef uint64_t h = FNV_OFFSET
    cdef size_t i
    for i in range(length):
        h = (h ^ data[i]) * FNV_PRIME
    return h


# --------------------------------------------------------------------------------------------------
# MD5 (RFC 1321). K[i] = floor(|sin(i + 1)| * 2**32).

cdef uint32_t _MD5_K[64]
_MD5_K[:] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
]
cdef int _MD5_S[64]
_MD5_S[:] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
]

cdef inline void _md5_block(uint32_t* state, const uint8_t* block) noexcept nogil:
    cdef uint32_t m[16]
    cdef uint32_t a = state[0], b = state[1], c = state[2], d = state[3], f, t
    cdef int i, g
    for i in range(16):
        m[i] = rk_load32(block + 4 * i)
    for i in range(64):
        if i < 16:
            f = (b & c) | (~b & d)
            g = i
        elif i < 32:
            f = (d & b) | (~d & c)
            g = (5 * i + 1) & 15
        elif i < 48:
            f = b ^ c ^ d
            g = (3 * i + 5) & 15
        else:
            f = c ^ (b | ~d)
            g = (7 * i) & 15
        t = d
        d = c
        c = b
        b = b + rk_rotl32(a + f + _MD5_K[i] + m[g], _MD5_S[i])
        a = t
    state[0] += a
    state[1] += b
    state[2] += c
    state[3] += d

cdef void md5_words(const uint8_t* data, size_t length, uint32_t* words) noexcept nogil:
    """The MD5 digest of data as four little-endian uint32 words (digest bytes 0-3, 4-7, ...)."""
    cdef uint8_t tail[128]
    cdef size_t full = length & ~(<size_t>63)
    cdef size_t rest = length - full
    cdef size_t padded, i
    cdef uint64_t bits = (<uint64_t>length) << 3
    words[0] = 0x67452301
    words[1] = 0xEFCDAB89
    words[2] = 0x98BADCFE
    words[3] = 0x10325476
    for i in range(0, full, 64):
        _md5_block(words, data + i)
    memset(tail, 0, 128)
    if rest:
        memcpy(tail, data + full, rest)
    tail[rest] = 0x80
    padded = 64 if rest < 56 else 128
    for i in range(8):
        tail[padded - 8 + i] = <uint8_t>(bits >> (8 * i))
    _md5_block(words, tail)
    if padded == 128:
        _md5_block(words, tail + 64)


# --------------------------------------------------------------------------------------------------
# MD5 over four short keys at once (RFC 1321; the batch paths of the md5 key hashes)

cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #  include <emmintrin.h>
    #  define RK_MD5X4_SSE2 1
    #else
    #  define RK_MD5X4_SSE2 0
    #endif
    static const uint32_t rk_md5x4_k[64] = {
        0xd76aa478U, 0xe8c7b756U, 0x242070dbU, 0xc1bdceeeU, 0xf57c0fafU, 0x4787c62aU, 0xa8304613U, 0xfd469501U,
        0x698098d8U, 0x8b44f7afU, 0xffff5bb1U, 0x895cd7beU, 0x6b901122U, 0xfd987193U, 0xa679438eU, 0x49b40821U,
        0xf61e2562U, 0xc040b340U, 0x265e5a51U, 0xe9b6c7aaU, 0xd62f105dU, 0x02441453U, 0xd8a1e681U, 0xe7d3fbc8U,
        0x21e1cde6U, 0xc33707d6U, 0xf4d50d87U, 0x455a14edU, 0xa9e3e905U, 0xfcefa3f8U, 0x676f02d9U, 0x8d2a4c8aU,
        0xfffa3942U, 0x8771f681U, 0x6d9d6122U, 0xfde5380cU, 0xa4beea44U, 0x4bdecfa9U, 0xf6bb4b60U, 0xbebfbc70U,
        0x289b7ec6U, 0xeaa127faU, 0xd4ef3085U, 0x04881d05U, 0xd9d4d039U, 0xe6db99e5U, 0x1fa27cf8U, 0xc4ac5665U,
        0xf4292244U, 0x432aff97U, 0xab9423a7U, 0xfc93a039U, 0x655b59c3U, 0x8f0ccc92U, 0xffeff47dU, 0x85845dd1U,
        0x6fa87e4fU, 0xfe2ce6e0U, 0xa3014314U, 0x4e0811a1U, 0xf7537e82U, 0xbd3af235U, 0x2ad7d2bbU, 0xeb86d391U
    };
    static const int rk_md5x4_s[64] = {
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
        5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
        4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
        6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21
    };
    static inline int rk_md5x4_g(int i) {
        if (i < 16) return i;
        if (i < 32) return (5 * i + 1) & 15;
        if (i < 48) return (3 * i + 5) & 15;
        return (7 * i) & 15;
    }
    /* One 64-byte block per lane (blocks: 4 x 64 bytes, lane after lane), from the initial
       state: out[lane][0..3] are that lane's digest words. The four lanes' rounds run side by
       side: in SSE2 registers where there are some, else in plain arrays. */
    static void rk_md5x4_block(const uint8_t *blocks, uint32_t out[4][4]) {
        int i, lane;
    #if RK_MD5X4_SSE2
        __m128i w[16], a, b, c, d, f, t, ones = _mm_set1_epi32(-1);
        for (i = 0; i < 16; i++)
            w[i] = _mm_set_epi32((int)rk_load32(blocks + 192 + 4 * i),
                                 (int)rk_load32(blocks + 128 + 4 * i),
                                 (int)rk_load32(blocks + 64 + 4 * i),
                                 (int)rk_load32(blocks + 4 * i));
        a = _mm_set1_epi32((int)0x67452301U); b = _mm_set1_epi32((int)0xEFCDAB89U);
        c = _mm_set1_epi32((int)0x98BADCFEU); d = _mm_set1_epi32((int)0x10325476U);
        for (i = 0; i < 64; i++) {
            if (i < 16) f = _mm_or_si128(_mm_and_si128(b, c), _mm_andnot_si128(b, d));
            else if (i < 32) f = _mm_or_si128(_mm_and_si128(d, b), _mm_andnot_si128(d, c));
            else if (i < 48) f = _mm_xor_si128(_mm_xor_si128(b, c), d);
            else f = _mm_xor_si128(c, _mm_or_si128(b, _mm_xor_si128(d, ones)));
            t = _mm_add_epi32(_mm_add_epi32(a, f),
                              _mm_add_epi32(_mm_set1_epi32((int)rk_md5x4_k[i]),
                                            w[rk_md5x4_g(i)]));
            t = _mm_or_si128(_mm_sll_epi32(t, _mm_cvtsi32_si128(rk_md5x4_s[i])),
                             _mm_srl_epi32(t, _mm_cvtsi32_si128(32 - rk_md5x4_s[i])));
            a = d; d = c; c = b;
            b = _mm_add_epi32(b, t);
        }
        {
            uint32_t va[4], vb[4], vc[4], vd[4];
            _mm_storeu_si128((__m128i *)va, _mm_add_epi32(a, _mm_set1_epi32((int)0x67452301U)));
            _mm_storeu_si128((__m128i *)vb, _mm_add_epi32(b, _mm_set1_epi32((int)0xEFCDAB89U)));
            _mm_storeu_si128((__m128i *)vc, _mm_add_epi32(c, _mm_set1_epi32((int)0x98BADCFEU)));
            _mm_storeu_si128((__m128i *)vd, _mm_add_epi32(d, _mm_set1_epi32((int)0x10325476U)));
            for (lane = 0; lane < 4; lane++) {
                out[lane][0] = va[lane]; out[lane][1] = vb[lane];
                out[lane][2] = vc[lane]; out[lane][3] = vd[lane];
            }
        }
    #else
        uint32_t w[16][4], a[4], b[4], c[4], d[4], f, t;
        for (i = 0; i < 16; i++)
            for (lane = 0; lane < 4; lane++)
                w[i][lane] = rk_load32(blocks + 64 * lane + 4 * i);
        for (lane = 0; lane < 4; lane++) {
            a[lane] = 0x67452301U; b[lane] = 0xEFCDAB89U;
            c[lane] = 0x98BADCFEU; d[lane] = 0x10325476U;
        }
        for (i = 0; i < 64; i++) {
            for (lane = 0; lane < 4; lane++) {
                if (i < 16) f = (b[lane] & c[lane]) | (~b[lane] & d[lane]);
                else if (i < 32) f = (d[lane] & b[lane]) | (~d[lane] & c[lane]);
                else if (i < 48) f = b[lane] ^ c[lane] ^ d[lane];
                else f = c[lane] ^ (b[lane] | ~d[lane]);
                t = a[lane] + f + rk_md5x4_k[i] + w[rk_md5x4_g(i)][lane];
                t = (t << rk_md5x4_s[i]) | (t >> (32 - rk_md5x4_s[i]));
                a[lane] = d[lane]; d[lane] = c[lane]; c[lane] = b[lane];
                b[lane] = b[lane] + t;
            }
        }
        for (lane = 0; lane < 4; lane++) {
            out[lane][0] = a[lane] + 0x67452301U; out[lane][1] = b[lane] + 0xEFCDAB89U;
            out[lane][2] = c[lane] + 0x98BADCFEU; out[lane][3] = d[lane] + 0x10325476U;
        }
    #endif
    }
    """
    void rk_md5x4_block(const uint8_t* blocks, uint32_t out[4][4]) noexcept nogil

cdef enum:
    # Keys of at most this many bytes fit MD5's one-block padding (the 0x80 byte, the length).
    MD5_ONE_BLOCK = 55


cdef struct Md5Lanes:
    # Up to four keys waiting for rk_md5x4_block: their bytes, lengths and places in `out`.
    const uint8_t* data[4]
    size_t length[4]
    Py_ssize_t index[4]
    int count


cdef inline bint md5_lanes_take(int algorithm) noexcept nogil:
    """Whether batches of `algorithm` go through Md5Lanes: the md5 key hashes, without hash_tag
    (whose hashed part is found per key)."""
    if algorithm == ALGO_MD5:
        return True
    if algorithm <= ALGO_MD5 or algorithm & FORM_HASH_TAG:
        return False
    return (algorithm & PROGRAM_MASK) == PROG_MD5 or (algorithm & PROGRAM_MASK) == PROG_MD5_HIGH64


cdef inline uint64_t _md5_result(int algorithm, const uint32_t* words, size_t length) noexcept nogil:
    """What hash_bytes returns for a key whose MD5 words are `words`."""
    if algorithm == ALGO_MD5:
        return (<uint64_t>words[1] << 32) | words[0]
    if algorithm & FORM_EMPTY_ZERO and length == 0:
        return 0
    if (algorithm & PROGRAM_MASK) == PROG_MD5:
        return words[0]
    return (<uint64_t>RK_BSWAP32(words[0]) << 32) | RK_BSWAP32(words[1])


cdef void md5_lanes_flush(Md5Lanes* lanes, int algorithm, uint64_t* out) noexcept nogil:
    """Hash the waiting keys into out (short ones four at a time), and empty the lanes."""
    cdef uint8_t blocks[256]
    cdef uint32_t digests[4][4]
    cdef uint32_t words[4]
    cdef int lane, i
    cdef size_t length
    cdef uint64_t bits
    if lanes.count == 0:
        return
    memset(blocks, 0, 256)
    for lane in range(lanes.count):
        length = lanes.length[lane]
        if length <= MD5_ONE_BLOCK:
            if length:      # an empty key may have no bytes to point at (NULL): no memcpy then
                memcpy(blocks + 64 * lane, lanes.data[lane], length)
            blocks[64 * lane + length] = 0x80
            bits = (<uint64_t>length) << 3
            for i in range(8):
                blocks[64 * lane + 56 + i] = <uint8_t>(bits >> (8 * i))
    rk_md5x4_block(blocks, digests)
    for lane in range(lanes.count):
        length = lanes.length[lane]
        if length <= MD5_ONE_BLOCK:
            out[lanes.index[lane]] = _md5_result(algorithm, &digests[lane][0], length)
        else:
            md5_words(lanes.data[lane], length, words)
            out[lanes.index[lane]] = _md5_result(algorithm, words, length)
    lanes.count = 0


cdef inline void md5_lanes_add(Md5Lanes* lanes, int algorithm, const uint8_t* data, size_t length,
                               Py_ssize_t index, uint64_t* out) noexcept nogil:
    """Queue one key (its bytes must stay valid until the next flush); four make a flush."""
    lanes.data[lanes.count] = data
    lanes.length[lanes.count] = length
    lanes.index[lanes.count] = index
    lanes.count += 1
    if lanes.count == 4:
        md5_lanes_flush(lanes, algorithm, out)


# --------------------------------------------------------------------------------------------------
# Program hashes: the 32-bit key hashes of twemproxy (src/hashkit) and libmemcached (libhashkit),
# and uhashring's, each as that program computes it, quirks included. Written from the
# published algorithms and the programs' documented behaviour; tests/compat_models.py holds slow
# models of each, proven against the real programs (tests/test_compat_models.py).
#
# Several of these C hashes widen a plain `char` to 32 or 64 bits, so a byte >= 0x80 enters them
# sign-extended on the platforms where char is signed (x86-64, where the programs were run and
# where most of them run): _sx32/_sx64 do that widening explicitly, so ringkit routes like an
# x86-64 build of the program on every platform.

cdef inline uint32_t _sx32(uint8_t b) noexcept nogil:
    """(uint32_t)(signed char)b."""
    return <uint32_t>b | (<uint32_t>0xFFFFFF00 if b & 0x80 else <uint32_t>0)

cdef inline uint64_t _sx64(uint8_t b) noexcept nogil:
    """(uint64_t)(signed char)b."""
    return <uint64_t>b | (<uint64_t>0xFFFFFFFFFFFFFF00 if b & 0x80 else <uint64_t>0)

cdef uint32_t _CRC32_TABLE[256]
cdef uint32_t _CRC16_TABLE[256]

cdef void _init_crc_tables() noexcept:
    cdef uint32_t c, i, k
    for i in range(256):
        c = i
        for k in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        _CRC32_TABLE[i] = c
        c = i << 8
        for k in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        _CRC16_TABLE[i] = c & 0xFFFF

_init_crc_tables()

cdef uint32_t one_at_a_time(const uint8_t* data, size_t length) noexcept nogil:
    """Jenkins' one-at-a-time (libmemcached's "default" key hash)."""
    cdef uint32_t value = 0
    cdef size_t i
    for i in range(length):
        value += _sx32(data[i])
        value += value << 10
        value ^= value >> 6
    value += value << 3
    value ^= value >> 11
    value += value << 15
    return value

cdef inline uint32_t _crc32(const uint8_t* data, size_t length) noexcept nogil:
    """The standard (zlib) CRC-32."""
    cdef uint32_t crc = 0xFFFFFFFF
    cdef size_t i
    for i in range(length):
        crc = (crc >> 8) ^ _CRC32_TABLE[(crc ^ data[i]) & 0xFF]
    return crc ^ 0xFFFFFFFFU

cdef inline uint32_t _crc16(const uint8_t* data, size_t length) noexcept nogil:
    """twemproxy's crc16: the XMODEM table step on a 32-bit state that is never cut to 16 bits."""
    cdef uint32_t crc = 0
    cdef size_t i
    for i in range(length):
        crc = (crc << 8) ^ _CRC16_TABLE[((crc >> 8) ^ data[i]) & 0xFF]
    return crc

cdef inline uint32_t _fnv1_64(const uint8_t* data, size_t length) noexcept nogil:
    cdef uint64_t value = FNV_OFFSET
    cdef size_t i
    for i in range(length):
        value *= FNV_PRIME
        value ^= _sx64(data[i])
    return <uint32_t>value

cdef inline uint32_t _fnv1a_64(const uint8_t* data, size_t length) noexcept nogil:
    """Both programs' "fnv1a_64": a 32-bit state seeded and multiplied with the low 32 bits of
    the 64-bit FNV constants."""
    cdef uint32_t value = <uint32_t>FNV_OFFSET
    cdef uint32_t prime = <uint32_t>FNV_PRIME
    cdef size_t i
    for i in range(length):
        value ^= _sx32(data[i])
        value *= prime
    return value

cdef inline uint32_t _fnv1_32(const uint8_t* data, size_t length) noexcept nogil:
    cdef uint32_t value = 0x811C9DC5
    cdef size_t i
    for i in range(length):
        value *= 0x01000193
        value ^= _sx32(data[i])
    return value

cdef inline uint32_t _fnv1a_32(const uint8_t* data, size_t length) noexcept nogil:
    cdef uint32_t value = 0x811C9DC5
    cdef size_t i
    for i in range(length):
        value ^= _sx32(data[i])
        value *= 0x01000193
    return value

cdef inline uint32_t _get16(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8)

cdef inline uint32_t _hsieh(const uint8_t* data, size_t length) noexcept nogil:
    """Hsieh's SuperFastHash from 0 (not from the length); the third byte of a 3-byte tail is
    read through a plain char."""
    cdef uint32_t value = 0, tmp
    cdef size_t blocks = length >> 2, i
    cdef const uint8_t* p = data
    if length == 0:
        return 0
    for i in range(blocks):
        value += _get16(p)
        tmp = (_get16(p + 2) << 11) ^ value
        value = (value << 16) ^ tmp
        p += 4
        value += value >> 11
    if (length & 3) == 3:
        value += _get16(p)
        value ^= value << 16
        value ^= _sx32(p[2]) << 18
        value += value >> 11
    elif (length & 3) == 2:
        value += _get16(p)
        value ^= value << 11
        value += value >> 17
    elif (length & 3) == 1:
        value += p[0]
        value ^= value << 10
        value += value >> 1
    value ^= value << 3
    value += value >> 5
    value ^= value << 4
    value += value >> 17
    value ^= value << 25
    value += value >> 6
    return value

cdef inline uint32_t _murmur2(const uint8_t* data, size_t length) noexcept nogil:
    """MurmurHash2 (32-bit) seeded with (0xdeadbeef * length) ^ length, as both programs do."""
    cdef uint32_t m = 0x5BD1E995
    cdef uint32_t n32 = <uint32_t>length
    cdef uint32_t value = (<uint32_t>0xDEADBEEF * n32) ^ n32
    cdef uint32_t k
    cdef const uint8_t* p = data
    cdef size_t left = length
    while left >= 4:
        k = rk_load32(p)
        k *= m
        k ^= k >> 24
        k *= m
        value *= m
        value ^= k
        p += 4
        left -= 4
    if left == 3:
        value ^= <uint32_t>p[2] << 16
    if left >= 2:
        value ^= <uint32_t>p[1] << 8
    if left >= 1:
        value ^= p[0]
        value *= m
    value ^= value >> 13
    value *= m
    value ^= value >> 15
    return value

cdef inline uint32_t _jenkins(const uint8_t* data, size_t length) noexcept nogil:
    """Jenkins' lookup3 hashlittle with initval 13 (both programs' "jenkins")."""
    cdef uint32_t a, b, c
    cdef uint8_t tail[12]
    cdef const uint8_t* p = data
    cdef size_t left = length
    a = b = c = <uint32_t>0xDEADBEEF + <uint32_t>length + 13
    if length == 0:
        return c
    while left > 12:
        a += rk_load32(p)
        b += rk_load32(p + 4)
        c += rk_load32(p + 8)
        a -= c; a ^= rk_rotl32(c, 4); c += b
        b -= a; b ^= rk_rotl32(a, 6); a += c
        c -= b; c ^= rk_rotl32(b, 8); b += a
        a -= c; a ^= rk_rotl32(c, 16); c += b
        b -= a; b ^= rk_rotl32(a, 19); a += c
        c -= b; c ^= rk_rotl32(b, 4); b += a
        p += 12
        left -= 12
    memset(tail, 0, 12)
    memcpy(tail, p, left)
    a += rk_load32(tail)
    b += rk_load32(tail + 4)
    c += rk_load32(tail + 8)
    c ^= b; c -= rk_rotl32(b, 14)
    a ^= c; a -= rk_rotl32(c, 11)
    b ^= a; b -= rk_rotl32(a, 25)
    c ^= b; c -= rk_rotl32(b, 16)
    a ^= c; a -= rk_rotl32(c, 4)
    b ^= a; b -= rk_rotl32(a, 14)
    c ^= b; c -= rk_rotl32(b, 24)
    return c

cdef uint32_t murmur3_32(const uint8_t* data, size_t length, uint32_t seed) noexcept nogil:
    """MurmurHash3 x86_32 (pymemcache's rendezvous score, over code points masked to 8 bits)."""
    cdef uint32_t c1 = 0xCC9E2D51, c2 = 0x1B873593
    cdef uint32_t h = seed, k = 0
    cdef const uint8_t* p = data
    cdef size_t left = length
    while left >= 4:
        k = rk_load32(p)
        k *= c1
        k = rk_rotl32(k, 15)
        k *= c2
        h ^= k
        h = rk_rotl32(h, 13)
        h = h * 5 + 0xE6546B64U
        p += 4
        left -= 4
    k = 0
    if left == 3:
        k ^= <uint32_t>p[2] << 16
    if left >= 2:
        k ^= <uint32_t>p[1] << 8
    if left >= 1:
        k ^= p[0]
        k *= c1
        k = rk_rotl32(k, 15)
        k *= c2
        h ^= k
    h ^= <uint32_t>length
    h ^= h >> 16
    h *= 0x85EBCA6BU
    h ^= h >> 13
    h *= 0xC2B2AE35U
    h ^= h >> 16
    return h

cdef uint64_t _program_hash(int algorithm, const uint8_t* data, size_t length,
                            uint64_t seed) noexcept nogil:
    """A program's key hash of data[0:length], after its key rules (FORM_* flags in `algorithm`;
    `seed` carries the two hash_tag bytes)."""
    cdef uint32_t words[4]
    cdef size_t start, end
    cdef uint8_t open_tag, close_tag
    if algorithm & FORM_HASH_TAG:
        # twemproxy's hash_tag "ab": hash the part after the first a and before the next b, when
        # that part is not empty; otherwise the whole key.
        open_tag = <uint8_t>(seed >> 8)
        close_tag = <uint8_t>seed
        start = 0
        while start < length and data[start] != open_tag:
            start += 1
        if start < length:
            end = start + 1
            while end < length and data[end] != close_tag:
                end += 1
            if end < length and end - start > 1:
                data = data + start + 1
                length = end - start - 1
    if algorithm & FORM_EMPTY_ZERO and length == 0:
        return 0
    algorithm = algorithm & PROGRAM_MASK
    if algorithm == PROG_ONE_AT_A_TIME:
        return one_at_a_time(data, length)
    if algorithm == PROG_MD5 or algorithm == PROG_MD5_HIGH64:
        md5_words(data, length, words)
        if algorithm == PROG_MD5:
            return words[0]
        # uhashring's default ring: the digest read as a big-endian number; its top 64 bits.
        return (<uint64_t>RK_BSWAP32(words[0]) << 32) | RK_BSWAP32(words[1])
    if algorithm == PROG_CRC16:
        return _crc16(data, length)
    if algorithm == PROG_CRC32:
        return (_crc32(data, length) >> 16) & 0x7FFF
    if algorithm == PROG_CRC32A:
        return _crc32(data, length)
    if algorithm == PROG_FNV1_64:
        return _fnv1_64(data, length)
    if algorithm == PROG_FNV1A_64:
        return _fnv1a_64(data, length)
    if algorithm == PROG_FNV1_32:
        return _fnv1_32(data, length)
    if algorithm == PROG_FNV1A_32:
        return _fnv1a_32(data, length)
    if algorithm == PROG_HSIEH:
        return _hsieh(data, length)
    if algorithm == PROG_MURMUR:
        return _murmur2(data, length)
    return _jenkins(data, length)


# --------------------------------------------------------------------------------------------------
# Dispatch

cdef inline uint64_t _hash_inline(int algorithm, const uint8_t* data, size_t length,
                                  uint64_t seed) noexcept nogil:
    if algorithm == ALGO_XXH64:
        return _xxh64(data, length, seed)
    return hash_bytes(algorithm, data, length, seed)

cdef uint64_t hash_bytes(int algorithm, const uint8_t* data, size_t length, uint64_t seed) noexcept nogil:
    cdef uint32_t words[4]
    if algorithm == ALGO_XXH64:
        return _xxh64(data, length, seed)
    if algorithm > ALGO_MD5:
        return _program_hash(algorithm, data, length, seed)
    if algorithm == ALGO_MURMUR3:
        return murmur3_64(data, length, seed)
    if algorithm == ALGO_FNV1A64:
        return fnv1a64(data, length)
    md5_words(data, length, words)
    return (<uint64_t>words[1] << 32) | words[0]

cdef inline void _store_le64(uint8_t* buf, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        buf[i] = <uint8_t>(value >> (8 * i))

cdef uint64_t hash_u64(int algorithm, uint64_t value, uint64_t seed) noexcept nogil:
    cdef uint8_t buf[8]
    if algorithm == ALGO_XXH64:
        return xxh64_u64(value, seed)
    _store_le64(buf, value)
    return hash_bytes(algorithm, buf, 8, seed)


# --------------------------------------------------------------------------------------------------
# Argument parsing

cdef object _ZERO = 0
cdef object _XXH64 = "xxh64"

cdef int parse_algorithm(object algorithm) except -1:
    if algorithm is _XXH64:
        return ALGO_XXH64   # the default (an interned literal), without a dict lookup
    if not isinstance(algorithm, str):
        raise TypeError(
            f"algorithm must be a str, one of {', '.join(map(repr, ALGORITHMS))}; "
            f"got {type(algorithm).__name__}")
    found = _ALGORITHM_IDS.get(algorithm)
    if found is None:
        raise ValueError(
            f"algorithm must be one of {', '.join(map(repr, ALGORITHMS))}; got {algorithm!r}")
    return found

cdef uint64_t parse_seed(int algorithm, object seed) except? 0xFFFFFFFFFFFFFFFF:
    if seed is _ZERO:
        return 0   # the default, without Python-level arithmetic
    if isinstance(seed, bool) or not PyIndex_Check(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    value = seed.__index__()
    limit = _SEED_LIMIT[algorithm]
    if limit == 0:
        if value != 0:
            raise ValueError(f"seed must be 0 for algorithm {ALGORITHMS[algorithm]!r} "
                             f"(it takes no seed); got {value}")
        return 0
    if value < 0 or value > limit:
        raise ValueError(f"seed must be in 0..{limit} for algorithm {ALGORITHMS[algorithm]!r}; "
                         f"got {value}")
    return <uint64_t>value


# --------------------------------------------------------------------------------------------------
# One key

cdef inline uint64_t _int_form(object key, str argname) except? 0xFFFFFFFFFFFFFFFF:
    """The 64-bit two's-complement form of an int key (int64 or uint64 range)."""
    try:
        return <uint64_t><int64_t>key
    except OverflowError:
        pass
    try:
        return <uint64_t>key
    except OverflowError:
        pass
    raise OverflowError(f"{argname}: int key {key} is outside the int64/uint64 range "
                        f"[-2**63, 2**64)")

cdef inline uint64_t _hash_str(object key, int algorithm, uint64_t seed,
                               str argname) except? 0xFFFFFFFFFFFFFFFF:
    cdef Py_ssize_t size
    cdef const char* utf8
    if PyUnicode_IS_COMPACT_ASCII(key):
        return hash_bytes(algorithm, <const uint8_t*>PyUnicode_DATA(key),
                          <size_t>PyUnicode_GET_LENGTH(key), seed)
    try:
        utf8 = PyUnicode_AsUTF8AndSize(key, &size)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{argname}: str key cannot be encoded as UTF-8 ({exc.reason} at "
                         f"position {exc.start}); lone surrogates are not valid keys") from None
    return hash_bytes(algorithm, <const uint8_t*>utf8, <size_t>size, seed)

cdef object program_text(object key, int algorithm, str argname):
    """The text a program hashes for a key that is not a str (FORM_TEXT, FORM_STR), or None for
    a key it hashes as it is (bytes-like, under FORM_TEXT) or that no program takes."""
    if PyBytes_Check(key) or isinstance(key, bytearray):
        # str() of bytes is their repr: b"ab" is hashed as the 5 characters b'ab'.
        return str(key) if algorithm & FORM_STR else None
    if isinstance(key, memoryview):
        if algorithm & FORM_STR:
            raise TypeError(f"{argname}: a memoryview key would be hashed as str(key), which "
                            f"is its address; pass bytes(key) (hashed as str(bytes))")
        return None
    if PyLong_Check(key) or isinstance(key, (np.integer, np.bool_)):
        return str(key)
    if PyIndex_Check(key) and not isinstance(key, np.ndarray):
        try:
            value = key.__index__()
        except TypeError:
            return None
        return str(key) if algorithm & FORM_STR else str(value)
    if algorithm & FORM_STR:
        # uhashring formats every key with str(): None routes as "None", 1.5 as "1.5".
        return str(key)
    return None

cdef uint64_t hash_object(object key, int algorithm, uint64_t seed,
                          str argname) except? 0xFFFFFFFFFFFFFFFF:
    cdef Py_buffer view
    cdef uint64_t h
    if PyUnicode_Check(key):
        return _hash_str(key, algorithm, seed, argname)
    if algorithm > ALGO_MD5:
        text = program_text(key, algorithm, argname)
        if text is not None:
            return _hash_str(text, algorithm, seed, argname)
    if PyBytes_Check(key):
        return hash_bytes(algorithm, <const uint8_t*>PyBytes_AS_STRING(key),
                          <size_t>PyBytes_GET_SIZE(key), seed)
    if PyLong_Check(key):
        return hash_u64(algorithm, _int_form(key, argname), seed)
    if isinstance(key, np.ndarray):
        raise TypeError(f"{argname}: a numpy array is not a key; hash a batch with hash64_many")
    if isinstance(key, np.bool_):
        # Like True and False, and like the items of a bool array (np.bool_ has no __index__).
        return hash_u64(algorithm, 1 if key else 0, seed)
    if PyIndex_Check(key):
        try:
            value = key.__index__()
        except TypeError:
            raise TypeError(f"{argname}: keys must be str, bytes-like or int, "
                            f"got {type(key).__name__}") from None
        return hash_u64(algorithm, _int_form(value, argname), seed)
    if isinstance(key, np.generic):
        # numpy scalars export their raw bytes through the buffer protocol; only integer and bool
        # scalars are keys (hashed like the same int, as in an integer or bool array), never the
        # bytes of a float64, complex or datetime64.
        raise TypeError(f"{argname}: keys must be str, bytes-like or int, "
                        f"got numpy {type(key).__name__}")
    if PyObject_CheckBuffer(key):
        try:
            PyObject_GetBuffer(key, &view, PyBUF_SIMPLE)
        except (BufferError, TypeError) as exc:
            raise TypeError(f"{argname}: a bytes-like key must be C-contiguous ({exc})") from None
        h = hash_bytes(algorithm, <const uint8_t*>view.buf, <size_t>view.len, seed)
        PyBuffer_Release(&view)
        return h
    if key is None:
        raise TypeError(f"{argname}: None is not a valid key (use str, bytes or int)")
    raise TypeError(f"{argname}: keys must be str, bytes-like or int, "
                    f"got {type(key).__name__}")


# --------------------------------------------------------------------------------------------------
# Batches

cdef object as_batch(object keys, str argname):
    if type(keys) is list or type(keys) is tuple:
        return keys
    if isinstance(keys, (list, tuple)):
        # A subclass may override __len__ or __getitem__; hash what iteration yields instead of
        # trusting them next to the raw item array.
        return list(keys)
    if isinstance(keys, np.ndarray):
        if type(keys) is not np.ndarray:
            refuse_masked(keys, argname)
        if keys.ndim != 1:
            raise ValueError(f"{argname} must be 1-dimensional, got an array of shape {keys.shape}")
        return keys
    if _is_arrow(keys):
        if hasattr(keys, "chunks") or hasattr(keys, "buffers"):
            return keys
        raise TypeError(f"{argname} must be a batch of keys (list, tuple, numpy or pyarrow "
                        f"array), got pyarrow {type(keys).__name__}")
    if isinstance(keys, (str, bytes, bytearray, memoryview, int)) or keys is None:
        raise TypeError(f"{argname} must be a batch of keys (list, tuple, numpy or pyarrow "
                        f"array), got a single {type(keys).__name__}; hash one key with hash64")
    if isinstance(keys, dict):
        raise TypeError(f"{argname} must be a batch of keys, got a dict")
    try:
        iterator = iter(keys)
    except TypeError:
        raise TypeError(f"{argname} must be a batch of keys (list, tuple, numpy or pyarrow "
                        f"array), got {type(keys).__name__}") from None
    # Outside the try: an error raised by the iterable itself propagates as it is.
    return list(iterator)

cdef inline bint _is_arrow(object obj):
    return type(obj).__module__.startswith("pyarrow")

cdef inline Py_ssize_t _sequence_size(object seq) noexcept:
    # The real item count (ob_size), never a __len__ that a subclass may override.
    if isinstance(seq, list):
        return PyList_GET_SIZE(seq)
    return PyTuple_GET_SIZE(seq)

cdef int _hash_list(object keys, int algorithm, uint64_t seed, uint64_t* out, Py_ssize_t n,
                    str argname) except -1:
    """Hash the n items of a list or tuple into out[0:n]."""
    cdef Py_ssize_t i = 0
    cdef PyObject** items
    cdef PyObject* raw
    cdef object item
    cdef Md5Lanes lanes
    cdef bint md5 = md5_lanes_take(algorithm)
    lanes.count = 0
    # A list can be changed by another thread while we read it: hold its critical section (a no-op
    # where the GIL exists). Exact ASCII str items, the common case, are hashed through a borrowed
    # pointer: nothing in that path runs Python code that could change the list. Anything else
    # takes a strong reference first, and may run Python code (__index__, __buffer__) that
    # changes the list, so the item array and its size are read again after it. The md5 hashes
    # queue borrowed pointers four at a time (Md5Lanes): the queue is flushed before any item
    # that may run Python code, so no queued pointer outlives its item.
    try:
        with cython.critical_section(keys):
            if _sequence_size(keys) != n:
                raise RuntimeError(f"{argname} changed size while being hashed")
            items = PySequence_Fast_ITEMS(keys)
            while i < n:
                raw = items[i]
                if i + 8 < n:
                    rk_prefetch(items[i + 8])
                if PyUnicode_CheckExact_PTR(raw) and PyUnicode_IS_COMPACT_ASCII_PTR(raw):
                    if md5:
                        md5_lanes_add(&lanes, algorithm,
                                      <const uint8_t*>PyUnicode_DATA_PTR(raw),
                                      <size_t>PyUnicode_GET_LENGTH_PTR(raw), i, out)
                    else:
                        out[i] = _hash_inline(algorithm, <const uint8_t*>PyUnicode_DATA_PTR(raw),
                                              <size_t>PyUnicode_GET_LENGTH_PTR(raw), seed)
                else:
                    md5_lanes_flush(&lanes, algorithm, out)
                    item = <object>raw
                    out[i] = hash_object(item, algorithm, seed, argname)
                    if _sequence_size(keys) != n:
                        raise RuntimeError(f"{argname} changed size while being hashed")
                    items = PySequence_Fast_ITEMS(keys)
                i += 1
            md5_lanes_flush(&lanes, algorithm, out)
    except (TypeError, ValueError, OverflowError) as exc:
        # Point at the offending item: "keys: ..." becomes "keys[i]: ...".
        message = str(exc)
        if type(exc) not in (TypeError, ValueError, OverflowError) or not message.startswith(
                argname + ":"):
            raise
        raise type(exc)(f"{argname}[{i}]" + message[len(argname):]) from None
    return 0

cdef void _hash_ints(int algorithm, uint64_t seed, const uint64_t[::1] values,
                     uint64_t* out) noexcept nogil:
    cdef Py_ssize_t i, n = values.shape[0]
    if algorithm == ALGO_XXH64:
        for i in range(n):
            out[i] = xxh64_u64(values[i], seed)
    else:
        for i in range(n):
            out[i] = hash_u64(algorithm, values[i], seed)

cdef void _hash_fixed_bytes(int algorithm, uint64_t seed, const uint8_t* data, Py_ssize_t n,
                            Py_ssize_t width, uint64_t* out) noexcept nogil:
    # numpy 'S' items drop their trailing NUL bytes, as arr[i] does.
    cdef Py_ssize_t i, length
    cdef const uint8_t* p
    for i in range(n):
        p = data + i * width
        length = width
        while length > 0 and p[length - 1] == 0:
            length -= 1
        out[i] = _hash_inline(algorithm, p, <size_t>length, seed)

cdef Py_ssize_t _hash_fixed_unicode(int algorithm, uint64_t seed, const uint32_t* data,
                                    Py_ssize_t n, Py_ssize_t width, uint8_t* scratch,
                                    uint64_t* out) noexcept nogil:
    """Hash numpy 'U' items as UTF-8; returns -1, or the index of an item that is not valid text."""
    cdef Py_ssize_t i, j, length, pos
    cdef const uint32_t* p
    cdef uint32_t c
    for i in range(n):
        p = data + i * width
        length = width
        while length > 0 and p[length - 1] == 0:
            length -= 1
        pos = 0
        for j in range(length):
            c = p[j]
            if c < 0x80:
                scratch[pos] = <uint8_t>c
                pos += 1
            elif c < 0x800:
                scratch[pos] = <uint8_t>(0xC0 | (c >> 6))
                scratch[pos + 1] = <uint8_t>(0x80 | (c & 0x3F))
                pos += 2
            elif c < 0x10000:
                if 0xD800 <= c <= 0xDFFF:
                    return i
                scratch[pos] = <uint8_t>(0xE0 | (c >> 12))
                scratch[pos + 1] = <uint8_t>(0x80 | ((c >> 6) & 0x3F))
                scratch[pos + 2] = <uint8_t>(0x80 | (c & 0x3F))
                pos += 3
            elif c <= 0x10FFFF:
                scratch[pos] = <uint8_t>(0xF0 | (c >> 18))
                scratch[pos + 1] = <uint8_t>(0x80 | ((c >> 12) & 0x3F))
                scratch[pos + 2] = <uint8_t>(0x80 | ((c >> 6) & 0x3F))
                scratch[pos + 3] = <uint8_t>(0x80 | (c & 0x3F))
                pos += 4
            else:
                return i
        out[i] = hash_bytes(algorithm, scratch, <size_t>pos, seed)
    return -1

ctypedef fused offset_t:
    int32_t
    int64_t

# How far ahead the Arrow kernels ask for the memory of keys (software prefetch), in arrays of
# at least PREFETCH_FROM bytes: measured on 10 M keys of 14-15 bytes, 128 and 64 took a
# string-view batch from 11 to 8.4 ns a key and a string batch from 7.7 to 7.1
# (bench/bench_frame.py's columns; 4 to 8 times less helped less), while 1 M keys, which the
# last-level cache nearly holds, went 8% slower with it.
cdef enum:
    VIEWS_AHEAD = 128
    BYTES_AHEAD = 64
    PREFETCH_FROM = 32 << 20

cdef Py_ssize_t _hash_offsets(int algorithm, uint64_t seed, const uint8_t* data, int64_t data_len,
                              const offset_t* offsets, Py_ssize_t n, uint64_t* out,
                              bint prefetch) noexcept nogil:
    """Hash arrow-layout items data[offsets[i]:offsets[i+1]]; returns -1, or the first bad index."""
    cdef Py_ssize_t i
    cdef int64_t start = offsets[0], stop, ahead_at
    cdef Md5Lanes lanes
    cdef bint md5 = md5_lanes_take(algorithm)
    lanes.count = 0
    for i in range(n):
        # The bytes of the key BYTES_AHEAD on are asked for now (when its offset is in range):
        # hashing takes less time than a read from memory, and keys are short.
        if prefetch and i + BYTES_AHEAD < n:
            ahead_at = offsets[i + BYTES_AHEAD]
            if 0 <= ahead_at < data_len:
                rk_prefetch(data + ahead_at)
        stop = offsets[i + 1]
        if start < 0 or stop < start or stop > data_len:
            md5_lanes_flush(&lanes, algorithm, out)
            return i
        if md5:
            md5_lanes_add(&lanes, algorithm, data + start, <size_t>(stop - start), i, out)
        else:
            out[i] = _hash_inline(algorithm, data + start, <size_t>(stop - start), seed)
        start = stop
    md5_lanes_flush(&lanes, algorithm, out)
    return -1

cdef Py_ssize_t _hash_views(int algorithm, uint64_t seed, const uint8_t* views, Py_ssize_t n,
                            const uint64_t* addresses, const int64_t* sizes, Py_ssize_t nbuffers,
                            uint64_t* out,
                            bint prefetch) noexcept nogil:
    """Hash Arrow string/binary views: 16 bytes each, an int32 length, then the bytes inline when
    they fit in 12, else a 4-byte prefix, an int32 data-buffer index and an int32 offset into it.
    Returns -1, or the first index whose view points outside its buffers."""
    cdef Py_ssize_t i
    cdef const uint8_t* view
    cdef const uint8_t* data
    cdef int32_t length, index, offset
    cdef Md5Lanes lanes
    cdef bint md5 = md5_lanes_take(algorithm)
    cdef const uint8_t* ahead
    lanes.count = 0
    for i in range(n):
        # Two streams to read (the views, and the bytes they point to): both are asked for
        # ahead of time, the views VIEWS_AHEAD keys on and the bytes of the view BYTES_AHEAD on.
        if prefetch and i + VIEWS_AHEAD < n:
            rk_prefetch(views + 16 * (i + VIEWS_AHEAD))
        if prefetch and i + BYTES_AHEAD < n:
            ahead = views + 16 * (i + BYTES_AHEAD)
            length = <int32_t>rk_load32(ahead)
            index = <int32_t>rk_load32(ahead + 8)
            offset = <int32_t>rk_load32(ahead + 12)
            if length > 12 and 0 <= index < nbuffers and 0 <= offset < sizes[index]:
                rk_prefetch(<const uint8_t*><size_t>addresses[index] + offset)
        view = views + 16 * i
        length = <int32_t>rk_load32(view)
        if length < 0:
            md5_lanes_flush(&lanes, algorithm, out)
            return i
        if length <= 12:
            data = view + 4
        else:
            index = <int32_t>rk_load32(view + 8)
            offset = <int32_t>rk_load32(view + 12)
            if index < 0 or index >= nbuffers or offset < 0 \
                    or <int64_t>offset + length > sizes[index]:
                md5_lanes_flush(&lanes, algorithm, out)
                return i
            data = <const uint8_t*><size_t>addresses[index] + offset
        if md5:
            md5_lanes_add(&lanes, algorithm, data, <size_t>length, i, out)
        else:
            out[i] = _hash_inline(algorithm, data, <size_t>length, seed)
    md5_lanes_flush(&lanes, algorithm, out)
    return -1

cdef object _UINT64 = np.dtype(np.uint64)
cdef object _INT64 = np.dtype(np.int64)
cdef object _INT32 = np.dtype(np.int32)

cdef int _hash_ndarray(object keys, int algorithm, uint64_t seed, uint64_t* out,
                       str argname) except -1:
    cdef str kind = keys.dtype.kind
    cdef const uint64_t[::1] ints
    cdef const uint8_t[::1] raw
    cdef const uint32_t[::1] ucs4
    cdef Py_ssize_t n = keys.shape[0], width, bad
    cdef uint8_t* scratch
    if algorithm > ALGO_MD5:
        # Programs hash the text of an int key ("5", "True"), and under FORM_STR the text of a
        # bytes key ("b'ab'").
        if kind == "u" or kind == "i" or kind == "b":
            return _hash_ndarray(keys.astype("U"), algorithm, seed, out, argname)
        if kind == "S" and algorithm & FORM_STR:
            return _hash_list([str(item) for item in keys.tolist()], algorithm, seed, out, n,
                              argname)
    # Each kind is read through checked_input: an array that is misaligned, byte-swapped or
    # strided is read from an aligned native copy, never through a misaligned pointer.
    if kind == "u" or kind == "b":
        ints = checked_input(keys, _UINT64, argname)
        with nogil:
            _hash_ints(algorithm, seed, ints, out)
    elif kind == "i":
        ints = checked_input(keys, _INT64, argname).view(np.uint64)
        with nogil:
            _hash_ints(algorithm, seed, ints, out)
    elif kind == "S":
        width = keys.dtype.itemsize
        if n == 0 or width == 0:
            return _hash_empty_items(algorithm, seed, n, out)
        raw = checked_input(keys, keys.dtype, argname).view(np.uint8)
        with nogil:
            _hash_fixed_bytes(algorithm, seed, &raw[0], n, width, out)
    elif kind == "U":
        width = keys.dtype.itemsize // 4
        if n == 0 or width == 0:
            return _hash_empty_items(algorithm, seed, n, out)
        ucs4 = checked_input(keys, keys.dtype.newbyteorder("="), argname).view(np.uint32)
        scratch = <uint8_t*>PyMem_Malloc(4 * width + 1)
        if scratch == NULL:
            raise MemoryError()
        with nogil:
            bad = _hash_fixed_unicode(algorithm, seed, &ucs4[0], n, width, scratch, out)
        PyMem_Free(scratch)
        if bad >= 0:
            raise ValueError(f"{argname}[{bad}]: str key cannot be encoded as UTF-8 (lone "
                             f"surrogate or code point above U+10FFFF)")
    elif kind == "O":
        _hash_list(keys.tolist(), algorithm, seed, out, n, argname)
    elif kind == "T":
        items = keys.tolist()
        na = getattr(keys.dtype, "na_object", _NO_NA)
        if na is not _NO_NA:
            for i, item in enumerate(items):
                if not isinstance(item, str):
                    raise ValueError(f"{argname}[{i}] is null; null keys cannot be hashed")
        _hash_list(items, algorithm, seed, out, n, argname)
    else:
        raise TypeError(f"{argname}: unsupported dtype {keys.dtype} (use integer, 'S', 'U', "
                        f"StringDType or object arrays)")
    return 0

cdef int _hash_empty_items(int algorithm, uint64_t seed, Py_ssize_t n, uint64_t* out) except -1:
    """n empty keys (a zero-width 'S' or 'U' array): each hashes like b"" (no pointer to read)."""
    cdef uint8_t empty = 0
    cdef Py_ssize_t i
    cdef uint64_t h
    if n:
        h = hash_bytes(algorithm, &empty, 0, seed)
        for i in range(n):
            out[i] = h
    return 0

cdef object _NO_NA = object()

_ARROW_OFFSETS = {
    "string": np.int32, "utf8": np.int32, "binary": np.int32,
    "large_string": np.int64, "large_utf8": np.int64, "large_binary": np.int64,
}

cdef int _hash_arrow_chunk(object arr, int algorithm, uint64_t seed, uint64_t* out,
                           Py_ssize_t base, str argname) except -1:
    cdef Py_ssize_t n = len(arr), bad = -1
    cdef _ArrowStrings strings
    type_name = str(arr.type)
    if type_name.startswith("dictionary"):
        return _hash_arrow_chunk(arr.dictionary_decode(), algorithm, seed, out, base, argname)
    if arr.null_count:
        first = arr.is_null().to_numpy(zero_copy_only=False).argmax()
        raise ValueError(f"{argname}[{base + first}] is null; null keys cannot be hashed")
    if algorithm & FORM_STR and "binary" in type_name:
        return _hash_list([str(item) for item in arr.to_pylist()], algorithm, seed, out, n,
                          argname)
    if type_name in _ARROW_VIEWS or type_name in _ARROW_OFFSETS:
        if n == 0:
            return 0
        strings = _arrow_strings(arr, type_name, argname)
        with nogil:
            bad = strings.hash_range(algorithm, seed, 0, n, out)
        if bad >= 0:
            raise ValueError(f"{argname}[{base + bad}]: malformed pyarrow array "
                             f"({'view' if strings.views else 'offsets'} out of range)")
        return 0
    if arr.type.__class__.__name__ == "DataType" and type_name.startswith(("int", "uint")):
        return _hash_ndarray(arr.to_numpy(zero_copy_only=False), algorithm, seed, out, argname)
    raise TypeError(f"{argname}: unsupported pyarrow type {type_name} (use string, "
                    f"large_string, string_view, binary, large_binary, binary_view or "
                    f"integer arrays)")

_ARROW_VIEWS = ("string_view", "binary_view")

cdef class _ArrowStrings:
    """A pyarrow string or binary array (plain, large or view) with at least one key and no
    nulls, its buffers looked up once: hash_range hashes any run of its keys, in place."""
    cdef object keep            # the numpy arrays whose memory the pointers below read
    cdef bint views
    cdef bint wide              # int64 offsets (large_string, large_binary)
    cdef const uint8_t* data
    cdef int64_t data_len
    cdef const void* offsets    # n + 1 offsets, from the array's first key on
    cdef const uint8_t* view_at # 16 bytes a view, from the array's first key on
    cdef const uint64_t* addresses
    cdef const int64_t* sizes
    cdef Py_ssize_t nbuffers
    cdef bint prefetch          # its buffers are too large for the cache: ask for keys ahead

    cdef Py_ssize_t hash_range(self, int algorithm, uint64_t seed, Py_ssize_t start,
                               Py_ssize_t count, uint64_t* out) noexcept nogil:
        """Hash keys start .. start + count - 1 into out[0:count]: -1, or the first bad index
        (counted from start)."""
        if self.views:
            return _hash_views(algorithm, seed, self.view_at + 16 * start, count,
                               self.addresses, self.sizes, self.nbuffers, out, self.prefetch)
        if self.wide:
            return _hash_offsets(algorithm, seed, self.data, self.data_len,
                                 (<const int64_t*>self.offsets) + start, count, out,
                                 self.prefetch)
        return _hash_offsets(algorithm, seed, self.data, self.data_len,
                             (<const int32_t*>self.offsets) + start, count, out,
                             self.prefetch)


cdef _ArrowStrings _arrow_strings(object arr, str type_name, str argname):
    """`arr` (of type `type_name`, one of _ARROW_VIEWS or _ARROW_OFFSETS; not empty, no nulls)
    ready for hash_range; ValueError naming `argname` when its buffers are too short."""
    cdef _ArrowStrings strings = _ArrowStrings.__new__(_ArrowStrings)
    cdef Py_ssize_t n = len(arr), first = arr.offset
    cdef const uint8_t[::1] bytes_view
    cdef const int32_t[::1] off32
    cdef const int64_t[::1] off64
    cdef const uint64_t[::1] addresses
    cdef const int64_t[::1] sizes
    buffers = arr.buffers()
    if type_name in _ARROW_VIEWS:
        if len(buffers) < 2 or buffers[1] is None:
            raise ValueError(f"{argname}: malformed pyarrow array (no views buffer)")
        views = np.frombuffer(buffers[1], dtype=np.uint8)
        if views.shape[0] < 16 * (first + n):
            raise ValueError(f"{argname}: malformed pyarrow array (views buffer too short)")
        data_buffers = buffers[2:]
        address_array = np.array([0 if b is None else b.address for b in data_buffers] or [0],
                                 dtype=np.uint64)
        size_array = np.array([0 if b is None else b.size for b in data_buffers] or [0],
                              dtype=np.int64)
        bytes_view = views
        addresses = address_array
        sizes = size_array
        strings.views = True
        strings.view_at = &bytes_view[16 * first]
        strings.addresses = &addresses[0]
        strings.sizes = &sizes[0]
        strings.nbuffers = len(data_buffers)
        strings.prefetch = views.shape[0] + int(size_array.sum()) >= PREFETCH_FROM
        strings.keep = (views, address_array, size_array)
        return strings
    offset_type = _ARROW_OFFSETS[type_name]
    data = None
    if buffers[2] is not None and buffers[2].size > 0:
        data = np.frombuffer(buffers[2], dtype=np.uint8)
        bytes_view = data
        strings.data = &bytes_view[0]
        strings.data_len = data.shape[0]
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[first:first + n + 1]
    if offsets.shape[0] != n + 1:
        raise ValueError(f"{argname}: malformed pyarrow array (offsets buffer too short)")
    # A buffer wrapped from foreign memory may start at any byte: read an aligned copy then.
    strings.wide = offset_type is np.int64
    offsets = checked_input(offsets, _INT64 if strings.wide else _INT32, argname)
    if strings.wide:
        off64 = offsets
        strings.offsets = &off64[0]
    else:
        off32 = offsets
        strings.offsets = &off32[0]
    strings.prefetch = strings.data_len + offsets.nbytes >= PREFETCH_FROM
    strings.keep = (data, offsets)
    return strings

cdef int hash_batch(object keys, int algorithm, uint64_t seed, uint64_t* out, Py_ssize_t n,
                    str argname) except -1:
    """Hash the keys of a batch already normalised by as_batch into out[0:n]."""
    cdef Py_ssize_t pos = 0
    if isinstance(keys, (list, tuple)):
        return _hash_list(keys, algorithm, seed, out, n, argname)
    if isinstance(keys, np.ndarray):
        return _hash_ndarray(keys, algorithm, seed, out, argname)
    if hasattr(keys, "chunks"):
        for chunk in keys.chunks:
            # (out may be NULL when the whole batch is empty: never offset it then.)
            _hash_arrow_chunk(chunk, algorithm, seed, out + pos if pos else out, pos, argname)
            pos += len(chunk)
        return 0
    if hasattr(keys, "buffers"):
        return _hash_arrow_chunk(keys, algorithm, seed, out, 0, argname)
    raise TypeError(f"{argname}: unsupported batch type {type(keys).__name__}")


# --------------------------------------------------------------------------------------------------
# Python API

cdef bint out_overlaps_keys(object out, object keys) except -1:
    return _out_overlaps_keys(out, keys)


# Keys per block of KeyBlocks: 128 KB of hashes, which stay in the L2 cache between the pass
# that writes them and the pass that reads them.
cdef enum:
    KEY_BLOCK = 16384

cdef class KeyBlocks:
    """A batch's hashes, a block of keys at a time, for the batch lookups.

    Hashing a whole batch into one array and then reading it back costs two trips through
    memory (80 MB each way for 10 M keys, plus the page faults of a fresh array); a block of
    KEY_BLOCK hashes is read back from the cache. A numpy array of fixed-width items, or a
    pyarrow array, longer than two blocks is cut into blocks (within one Arrow chunk: slices
    share the buffers); anything else (lists, object arrays) is hashed whole, as one block, and
    so is every batch when ``blocked`` is False (a caller whose output may overlap the keys).

    A block that fails to hash (a null key, a bad item) makes the whole batch hash again, which
    raises the error naming the key's index in the batch; the caller may rely on every key
    being hashed before anything is raised for it, not before the earlier blocks were used.
    """

    def __cinit__(self, object batch, Py_ssize_t n, int algorithm, uint64_t seed, str argname,
                  bint blocked=True):
        self.batch = batch
        self.n = n
        self.algorithm = algorithm
        self.seed = seed
        self.argname = argname
        self.start = 0
        self.count = 0
        self.chunk = 0
        self.chunk_start = 0
        self.hashes = NULL
        self.chunks = None
        self.current = None
        self.prepared = False
        self.whole = True
        if blocked and n > 2 * KEY_BLOCK:
            if isinstance(batch, np.ndarray):
                self.whole = batch.dtype.kind not in "biuSU"
                self.chunks = [batch]
            elif _is_arrow(batch):
                self.whole = False
                self.chunks = list(batch.chunks) if hasattr(batch, "chunks") else [batch]
        if not self.whole:
            self.buffer = np.empty(KEY_BLOCK, dtype=np.uint64)
            self.hashes = <uint64_t*>_data_of(self.buffer)

    cdef bint next(self) except -1:
        """Hash the next block: False when every key has been hashed."""
        cdef Py_ssize_t size, bad
        cdef _ArrowStrings strings
        if self.start + self.count >= self.n:
            return False
        if self.whole:
            self._hash_whole()
            return True
        while True:     # the next run of at most KEY_BLOCK keys, within one chunk
            chunk = self.chunks[self.chunk]
            size = len(chunk) - self.chunk_start
            if size > 0:
                break
            self.chunk += 1
            self.chunk_start = 0
            self.prepared = False
        if size > KEY_BLOCK:
            size = KEY_BLOCK
        try:
            if not self.prepared:
                self.current = self._strings_of(chunk)
                self.prepared = True
            if self.current is not None:
                strings = <_ArrowStrings>self.current
                with nogil:
                    bad = strings.hash_range(self.algorithm, self.seed, self.chunk_start, size,
                                             self.hashes)
                if bad >= 0:    # to the handler below: the whole batch names the bad key
                    raise ValueError("malformed pyarrow array")
            else:
                part = chunk[self.chunk_start:self.chunk_start + size] \
                    if isinstance(chunk, np.ndarray) else chunk.slice(self.chunk_start, size)
                hash_batch(part, self.algorithm, self.seed, self.hashes, size, self.argname)
        except (TypeError, ValueError, OverflowError):
            self._hash_whole()      # raises the error with the key's index in the whole batch
            return True
        self.start += self.count
        self.count = size
        self.chunk_start += size
        return True

    cdef object _strings_of(self, object chunk):
        """A chunk of Arrow strings without nulls, its buffers looked up once for all its
        blocks (a view array may have hundreds of data buffers); None for anything else."""
        if isinstance(chunk, np.ndarray) or chunk.null_count:
            return None
        type_name = str(chunk.type)
        if type_name not in _ARROW_VIEWS and type_name not in _ARROW_OFFSETS:
            return None
        if self.algorithm & FORM_STR and "binary" in type_name:
            return None     # bytes keys hashed as str(key): item by item
        return _arrow_strings(chunk, type_name, self.argname)

    cdef int _hash_whole(self) except -1:
        self.buffer = np.empty(self.n + 1, dtype=np.uint64)
        self.hashes = <uint64_t*>_data_of(self.buffer)
        hash_batch(self.batch, self.algorithm, self.seed, self.hashes, self.n, self.argname)
        self.whole = True
        self.start = 0
        self.count = self.n
        return 0


cdef void* _data_of(object arr) except NULL:
    cdef uint64_t[::1] view = arr
    return <void*>&view[0]


cdef bint _out_overlaps_keys(object out, object keys) except -1:
    """Whether writing hashes into `out` could change keys not hashed yet."""
    if isinstance(keys, np.ndarray):
        return overlaps(out, keys)
    if _is_arrow(keys):
        for chunk in (keys.chunks if hasattr(keys, "chunks") else (keys,)):
            for buf in chunk.buffers():
                if buf is not None and overlaps_range(out, buf.address, buf.size):
                    return True
    return False


def hash64(key: str | bytes | bytearray | memoryview | SupportsIndex, algorithm: str = "xxh64",
           seed: SupportsIndex = 0) -> int:
    """Hash one key to an unsigned 64-bit int.

    ``key`` is a str (hashed as UTF-8), a bytes-like object, or an int (hashed as its 8-byte
    little-endian two's-complement form; it must fit int64 or uint64). ``algorithm`` is one of
    ``"xxh64"`` (seed 0..2**64-1), ``"murmur3"`` (MurmurHash3 x64_128's first half, seed
    0..2**32-1), ``"fnv1a64"`` or ``"md5"`` (first 8 digest bytes, little-endian; both take no
    seed, so seed must be 0).

    >>> hash64("user:1") == hash64(b"user:1")
    True
    """
    cdef int algo = parse_algorithm(algorithm)
    cdef uint64_t s = parse_seed(algo, seed)
    return hash_object(key, algo, s, "key")


def hash64_many(keys: Iterable[Any] | npt.ArrayLike, algorithm: str = "xxh64",
                seed: SupportsIndex = 0,
                out: npt.NDArray[np.uint64] | None = None) -> npt.NDArray[np.uint64]:
    """Hash a batch of keys to a numpy uint64 array; element i equals ``hash64(keys[i], ...)``.

    ``keys`` may be a list or tuple of str/bytes/int, a 1-d numpy array (integer, bool, 'S', 'U',
    object or StringDType), or a pyarrow string/binary array (large, view or plain; sliced,
    chunked or dictionary encoded), read straight from its buffers (polars' string columns,
    exported with ``pyarrow.chunked_array(series)``, are string views read in place). Numeric and fixed-width arrays and pyarrow buffers are hashed
    with the GIL released; an array that is misaligned, byte-swapped or strided is hashed from an
    aligned copy. Masked arrays are refused (fill or compress them first).

    ``out``, if given, is a writeable, aligned, C-contiguous uint64 array (native byte order) of
    ``len(keys)`` that receives the hashes and is returned. It may be ``keys`` itself; if it
    overlaps ``keys`` any other way, the hashes are computed into a temporary and then copied
    into ``out`` (as numpy's ufuncs do), so the answer is always that of separate arrays.
    """
    cdef int algo = parse_algorithm(algorithm)
    cdef uint64_t s = parse_seed(algo, seed)
    batch = as_batch(keys, "keys")
    cdef Py_ssize_t n = len(batch)
    cdef uint64_t[::1] result
    cdef uint64_t* dst = NULL
    target = checked_output(out, _UINT64, (n,), "out")
    if out is not None and n and _out_overlaps_keys(target, batch):
        target = np.empty(n, dtype=np.uint64)
    result = target
    if n:
        dst = &result[0]
    # Even an empty batch goes through: an unsupported dtype is an error at any length.
    hash_batch(batch, algo, s, dst, n, "keys")
    if out is None:
        return target
    if target is not out:
        out[...] = target
    return out


# --------------------------------------------------------------------------------------------------
# Program hashes, for ringkit.compat (not part of the public API)

#: Key hash name (twemproxy's names; libmemcached's "crc" is twemproxy's "crc32") -> program id.
PROGRAM_HASHES = {
    "one_at_a_time": PROG_ONE_AT_A_TIME, "md5": PROG_MD5, "crc16": PROG_CRC16,
    "crc32": PROG_CRC32, "crc32a": PROG_CRC32A, "fnv1_64": PROG_FNV1_64,
    "fnv1a_64": PROG_FNV1A_64, "fnv1_32": PROG_FNV1_32, "fnv1a_32": PROG_FNV1A_32,
    "hsieh": PROG_HSIEH, "murmur": PROG_MURMUR, "jenkins": PROG_JENKINS,
    "md5_high64": PROG_MD5_HIGH64,
}
#: Key forms (or-ed into a program id): see _hashing.pxd.
FORMS = {"text": FORM_TEXT, "str": FORM_STR, "hash_tag": FORM_HASH_TAG,
         "empty_zero": FORM_EMPTY_ZERO}


cdef int _program_id(object algorithm) except -1:
    if isinstance(algorithm, bool) or not isinstance(algorithm, int):
        raise TypeError("algorithm must be a program hash id")
    if not PROG_ONE_AT_A_TIME <= (algorithm & PROGRAM_MASK) <= PROG_MD5_HIGH64 or \
            algorithm & ~(PROGRAM_MASK | FORM_TEXT | FORM_STR | FORM_HASH_TAG | FORM_EMPTY_ZERO):
        raise ValueError(f"algorithm {algorithm!r} is not a program hash id")
    return algorithm


def program_hash(key: Any, algorithm: int, seed: int = 0) -> int:
    """One key's hash by a program's key hash (`algorithm`: a PROGRAM_HASHES id or-ed with FORMS;
    `seed`: hash_tag's two bytes, open << 8 | close)."""
    return hash_object(key, _program_id(algorithm), <uint64_t>seed, "key")


def program_hash_many(keys: Iterable[Any] | npt.ArrayLike, algorithm: int,
                      seed: int = 0) -> npt.NDArray[np.uint64]:
    """A batch of keys hashed by a program's key hash (see program_hash)."""
    cdef int algo = _program_id(algorithm)
    batch = as_batch(keys, "keys")
    cdef Py_ssize_t n = len(batch)
    result = np.empty(n + 1, dtype=np.uint64)
    cdef uint64_t[::1] rv = result
    hash_batch(batch, algo, <uint64_t>seed, &rv[0], n, "keys")
    return result[:n]


def md5_digests(names: list[bytes]) -> npt.NDArray[np.uint32]:
    """The MD5 digest of each bytes string, as four little-endian uint32 words: shape (n, 4)."""
    cdef Py_ssize_t n = len(names), i
    result = np.empty((n, 4), dtype=np.uint32)
    cdef uint32_t[:, ::1] rv = result
    cdef bytes name
    for i in range(n):
        name = names[i]
        md5_words(<const uint8_t*><char*>name, len(name), &rv[i, 0])
    return result
