# C-level interface of the ring core, for the modules that cimport it (_select).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

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
    # A program continuum (ringkit.compat) whose lookup takes the first point strictly *after*
    # the key's hash (uhashring's bisect_right), not at or after it.
    cdef readonly bint after
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
    # The ring position of a key, and of a batch of keys (a fresh uint64 array of n + 1, the last
    # slot spare): hashed with the ring's algorithm and seed, then placed by key_position (below:
    # shifted into the top half on a ketama ring, DESIGN.md "Keys and hashes").
    cdef uint64_t key_hash(self, object key, str argname) except? 0xFFFFFFFFFFFFFFFF
    cdef object batch_hashes(self, object batch, Py_ssize_t n, str argname)


cdef inline uint64_t key_position(RingState st, uint64_t h) noexcept nogil:
    """The ring position of a key hashed to h: h itself, or on a ketama ring (32-bit points
    stored in the top half of a uint64) h << 32, so that "first point >= position" still holds.
    On a continuum whose lookup takes the first point strictly after the hash (``after``), the
    position is the next one up: (h << 32) | 0xFFFFFFFF, or h + 1 (which wraps past the last
    point to 0, the first point, as the lookup wraps). RingState.key_hash and
    RingState.batch_hashes, the only ways keys reach a ring, go through this one function."""
    if st.ketama:
        return (h << 32) | (<uint64_t>0xFFFFFFFF if st.after else <uint64_t>0)
    return h + st.after


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


cdef inline Py_ssize_t bounded_walk(RingState st, Py_ssize_t start, const int32_t* node_of,
                                    const int64_t* load, const double* share, double room,
                                    const uint8_t* excluded) noexcept nogil:
    """Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016): the node
    that takes a key whose point is at `start`, walking clockwise.

    A point's node is ``node_of[owner]`` (``owner`` when node_of is NULL). The walk takes the
    first node that may take keys (``share > 0`` and not ``excluded``) with room:
    ``load < room * share``, which for an integer load is ``load < ceil(room * share)``, the
    paper's cap, without computing a ceiling per step. If no node has room it returns the first
    node that may take keys, and -1 if there is none. HashRing.assign_bounded passes each owner's
    capacity as its share and room 1; the balancer's "ring" strategy passes weight shares and
    ``load_factor * (in flight + 1)``.
    """
    cdef Py_ssize_t steps, node, p = start, fallback = -1, npoints = st.npoints
    cdef bint allowed
    for steps in range(npoints):
        node = st.owners[p] if node_of == NULL else node_of[st.owners[p]]
        allowed = excluded == NULL or not excluded[node]
        # Most keys stop at their own point, after one comparison.
        if allowed and load[node] < room * share[node] and share[node] > 0:
            return node
        if fallback < 0 and allowed and share[node] > 0:
            fallback = node
        p += 1
        if p == npoints:
            p = 0
    return fallback
