# C-level interface of the ring core, for the modules that cimport it (_select).
from libc.stdint cimport int32_t, uint32_t, uint64_t

cimport cython


@cython.final
cdef class RingState:
    cdef readonly tuple nodes
    cdef readonly tuple weight_values
    cdef readonly tuple counts           # points per node, aligned with nodes
    cdef readonly int vnodes
    cdef readonly str algorithm
    cdef readonly object seed
    cdef readonly bint ketama
    cdef readonly object points_array    # uint64[npoints], read-only
    cdef readonly object owners_array    # int32[npoints], read-only
    cdef readonly object index_array     # uint32[2**bits + 1], read-only
    cdef dict positions
    cdef object _fingerprint
    cdef int algo
    cdef uint64_t seed_value
    cdef const uint64_t* points          # npoints points, then PAD sentinels (UINT64_MAX)
    cdef const int32_t* owners
    cdef const uint32_t* index
    cdef Py_ssize_t npoints
    cdef Py_ssize_t nplaced              # nodes owning >= 1 point (a ketama share can give none)
    cdef int shift

    cdef Py_ssize_t find(self, uint64_t h) noexcept nogil
    cdef uint64_t key_hash(self, object key, str argname) except? 0xFFFFFFFFFFFFFFFF
    cdef object batch_hashes(self, object batch, Py_ssize_t n)


cdef inline Py_ssize_t ring_find(RingState st, uint64_t h) noexcept nogil:
    """Position of the first point >= h, wrapping to 0.

    index[b] is the first point of bucket b or later; every point past bucket b is > h, and
    sentinels (UINT64_MAX) follow the last point, so the scan needs no end check. Buckets hold
    one or two points on average: the first three are compared without branches (the points
    below h are a prefix, so counting them is the step), which keeps lookups of independent
    keys overlapping in the pipeline instead of stalling on a mispredicted loop exit.
    """
    cdef const uint64_t* points = st.points
    cdef Py_ssize_t lo = st.index[h >> st.shift]
    lo += (points[lo] < h) + (points[lo + 1] < h) + (points[lo + 2] < h)
    while points[lo] < h:
        lo += 1
    return lo if lo < st.npoints else 0
