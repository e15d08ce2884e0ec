# cython: freethreading_compatible = True
"""The consistent-hash ring core: immutable snapshots of sorted points and their owners.

A snapshot holds the ring's points (sorted uint64), beside them the owner of each point (an index
into the snapshot's sorted node names), and an acceleration index over the top bits of the hash:
``index[b]`` is the position of the first point whose top bits are >= b, so a lookup scans the
one or two points of its bucket instead of binary-searching the whole ring. The owner of hash h is
the first point >= h, wrapping to the first point; equal points are ordered by owner, and owners are
sorted node names, so the ring never depends on the order nodes were added in.
"""

from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc
from libc.math cimport ceil, isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cimport cython

from ringkit._arrays cimport checked_input, checked_output, overlaps
from ringkit._hashing cimport (
    ALGO_MD5,
    ALGO_XXH64,
    KeyBlocks,
    as_batch,
    hash_batch,
    hash_bytes,
    hash_object,
    md5_words,
    out_overlaps_keys,
    parse_algorithm,
    parse_seed,
)

from bisect import bisect_left

import numpy as np

from ringkit.errors import EmptyRingError, UnknownNodeError

cdef object _UINT64 = np.dtype(np.uint64)
cdef object _INT32 = np.dtype(np.int32)

# Point counts stay below 2**31 so owners and positions fit int32.
MAX_POINTS = 2**31 - 1
# Placement format: bumped (with a CHANGELOG entry) if the point layout ever changes.
FORMAT = 1

# Sentinel points (UINT64_MAX) after the last point, so a lookup may read a few points ahead.
cdef enum:
    PAD = 4
    POINT_CHUNK = 1024   # point inputs written per batch by _node_points

cdef int _bits_for(Py_ssize_t npoints) noexcept nogil:
    """Index bits: about one point per bucket, fewer buckets than points (<= 4 bytes/point).

    The index has 2**bits + 1 entries, so 2**bits must stay below npoints (not equal to it) for
    the entries to fit 4 bytes per point once npoints >= 3.
    """
    cdef int bits = 1
    while bits < 30 and (<Py_ssize_t>1 << (bits + 1)) < npoints:
        bits += 1
    return bits


# --------------------------------------------------------------------------------------------------
# Nogil kernels over raw arrays

cdef void _build_index(const uint64_t* points, Py_ssize_t npoints, int bits,
                       uint32_t* index) noexcept nogil:
    """index[b] = number of points in buckets < b (the first point of bucket b or later).

    Counted, then summed: no data-dependent branches.
    """
    cdef Py_ssize_t nbuckets = <Py_ssize_t>1 << bits
    cdef int shift = 64 - bits
    cdef Py_ssize_t b, i
    memset(index, 0, (nbuckets + 1) * sizeof(uint32_t))
    for i in range(npoints):
        index[(points[i] >> shift) + 1] += 1
    for b in range(nbuckets):
        index[b + 1] += index[b]

cdef inline bint _before(uint64_t pa, int32_t oa, uint64_t pb, int32_t ob) noexcept nogil:
    return pa < pb or (pa == pb and oa < ob)

cdef void _sort_points(uint64_t* points, int32_t* owners, Py_ssize_t n, int bits,
                       uint64_t* tmp_points, int32_t* tmp_owners, uint32_t* counts) noexcept nogil:
    """Sort (point, owner) pairs: a counting sort on the top `bits`, then insertion sort per bucket.

    Points are hash outputs, so buckets hold about one point each and this is O(n). `counts` has
    room for 2**bits + 1 entries.
    """
    cdef Py_ssize_t nbuckets = <Py_ssize_t>1 << bits
    cdef int shift = 64 - bits
    cdef Py_ssize_t i, j, b, start, stop
    cdef uint64_t p
    cdef int32_t o
    for b in range(nbuckets + 1):
        counts[b] = 0
    for i in range(n):
        b = <Py_ssize_t>(points[i] >> shift)
        counts[b + 1] += 1
    for b in range(nbuckets):
        counts[b + 1] += counts[b]
    for i in range(n):
        b = <Py_ssize_t>(points[i] >> shift)
        j = counts[b]
        counts[b] += 1
        tmp_points[j] = points[i]
        tmp_owners[j] = owners[i]
    memcpy(points, tmp_points, n * sizeof(uint64_t))
    memcpy(owners, tmp_owners, n * sizeof(int32_t))
    # counts[b] is now the end of bucket b; insertion-sort each bucket.
    start = 0
    for b in range(nbuckets):
        stop = counts[b]
        for i in range(start + 1, stop):
            p = points[i]
            o = owners[i]
            j = i - 1
            while j >= start and _before(p, o, points[j], owners[j]):
                points[j + 1] = points[j]
                owners[j + 1] = owners[j]
                j -= 1
            points[j + 1] = p
            owners[j + 1] = o
        start = stop

cdef void _node_points(int algorithm, uint64_t seed, const uint8_t* name, Py_ssize_t name_len,
                       Py_ssize_t count, uint8_t* buf, uint64_t* out) noexcept nogil:
    """Point i of a node: hash(name_utf8 + i.to_bytes(4, "little")), for i in range(count).

    `buf` holds POINT_CHUNK * (name_len + 4) bytes. All the inputs are written before any is hashed:
    hashing each right after writing its last four bytes would stall every load on a store it
    cannot forward.
    """
    cdef Py_ssize_t i, start, stop, width = name_len + 4
    cdef uint8_t* key
    start = 0
    while start < count:
        stop = min(start + <Py_ssize_t>POINT_CHUNK, count)
        for i in range(start, stop):
            key = buf + (i - start) * width
            memcpy(key, name, name_len)
            key[name_len] = <uint8_t>(i)
            key[name_len + 1] = <uint8_t>(i >> 8)
            key[name_len + 2] = <uint8_t>(i >> 16)
            key[name_len + 3] = <uint8_t>(i >> 24)
        for i in range(start, stop):
            out[i] = hash_bytes(algorithm, buf + (i - start) * width, <size_t>width, seed)
        start = stop

cdef void _ketama_points(const uint8_t* name, Py_ssize_t name_len, Py_ssize_t digests,
                         uint8_t* buf, uint64_t* out) noexcept nogil:
    """libketama's points: md5("%s-%d" % (name, k)) as four little-endian uint32, each << 32."""
    cdef Py_ssize_t k, pos, m, d
    cdef uint32_t words[4]
    cdef uint8_t digits[24]
    memcpy(buf, name, name_len)
    buf[name_len] = 45  # '-'
    for k in range(digests):
        m = k
        d = 0
        while True:
            digits[d] = <uint8_t>(48 + m % 10)
            d += 1
            m //= 10
            if m == 0:
                break
        pos = name_len + 1
        while d > 0:
            d -= 1
            buf[pos] = digits[d]
            pos += 1
        md5_words(buf, <size_t>pos, words)
        out[4 * k] = (<uint64_t>words[0]) << 32
        out[4 * k + 1] = (<uint64_t>words[1]) << 32
        out[4 * k + 2] = (<uint64_t>words[2]) << 32
        out[4 * k + 3] = (<uint64_t>words[3]) << 32

cdef void _merge_node(const uint64_t* pa, const int32_t* oa, Py_ssize_t na, int32_t node,
                      const uint64_t* pb, Py_ssize_t nb,
                      uint64_t* points, int32_t* owners) noexcept nogil:
    """Merge the sorted points `pb` of a new node, whose owner id is `node`, into the ring's
    (pa, oa); owners at or after `node` move up by one on the way (the new name sorts there)."""
    cdef Py_ssize_t i = 0, j = 0, k = 0
    cdef int32_t o
    while i < na and j < nb:
        o = oa[i] + (oa[i] >= node)
        if _before(pb[j], node, pa[i], o):
            points[k] = pb[j]
            owners[k] = node
            j += 1
        else:
            points[k] = pa[i]
            owners[k] = o
            i += 1
        k += 1
    while i < na:
        points[k] = pa[i]
        owners[k] = oa[i] + (oa[i] >= node)
        i += 1
        k += 1
    while j < nb:
        points[k] = pb[j]
        owners[k] = node
        j += 1
        k += 1


# --------------------------------------------------------------------------------------------------
# The immutable state

@cython.final
cdef class RingState:
    """One immutable ring: node names (sorted), weights, points, owners and index.

    Built by the module functions below; never changed after construction.
    """
    def __reduce__(self):
        raise TypeError("RingState is internal; pickle the HashRing or RingSnapshot instead")

    cdef Py_ssize_t find(self, uint64_t h) noexcept nogil:
        return ring_find(self, h)

    cdef uint64_t key_hash(self, object key, str argname) except? 0xFFFFFFFFFFFFFFFF:
        return key_position(self, hash_object(key, self.algo, self.seed_value, argname))

    cdef object batch_hashes(self, object batch, Py_ssize_t n, str argname):
        """Hash a batch into a fresh uint64 array (one spare slot, so it is never empty)."""
        cdef uint64_t[::1] hashes
        cdef Py_ssize_t i
        arr = np.empty(n + 1, dtype=np.uint64)
        hashes = arr
        if n:
            hash_batch(batch, self.algo, self.seed_value, &hashes[0], n, argname)
            if self.ketama or self.after:
                with nogil:
                    for i in range(n):
                        hashes[i] = key_position(self, hashes[i])
        return arr

    def position(self, name: str) -> int:
        """Index of `name` in nodes, or raise UnknownNodeError."""
        found = self.positions.get(name)
        if found is None:
            raise UnknownNodeError(name, f"node {name!r} is not in the ring")
        return found


_SENTINEL = np.uint64(0xFFFFFFFFFFFFFFFF)

cdef object _points_buffer(Py_ssize_t n):
    """A uint64 array for n points followed by PAD sentinels (see ring_find in _ring.pxd)."""
    padded = np.empty(n + PAD, dtype=np.uint64)
    padded[n:] = _SENTINEL
    return padded

cdef RingState _make_state(tuple nodes, tuple weights, tuple counts, int vnodes, str algorithm,
                           object seed, bint ketama, object padded, object owners):
    """Wrap sorted point/owner arrays in a RingState, building the index."""
    cdef RingState st = RingState.__new__(RingState)
    cdef Py_ssize_t n = owners.shape[0]
    points = padded[:n]
    cdef int bits = _bits_for(n)
    cdef uint64_t[::1] pv
    cdef uint32_t[::1] iv
    index = np.empty((1 << bits) + 1, dtype=np.uint32)
    iv = index
    if n:
        pv = points
        with nogil:
            _build_index(&pv[0], n, bits, &iv[0])
    else:
        iv[0] = 0
        iv[1] = 0
    for arr in (padded, points, owners, index):
        arr.flags.writeable = False
    st.nodes = nodes
    st.weight_values = weights
    st.counts = counts
    st.vnodes = vnodes
    st.algorithm = algorithm
    st.seed = seed
    st.ketama = ketama
    st.after = False
    st.algo = ALGO_MD5 if ketama else parse_algorithm(algorithm)
    st.seed_value = parse_seed(st.algo, seed)
    st.seed = int(st.seed_value)  # a plain int however it was given (numpy), so to_dict is JSON
    st.points_array = points
    st.owners_array = owners
    st.index_array = index
    st.npoints = n
    st.nplaced = sum(1 for c in counts if c)
    st.shift = 64 - bits
    st.positions = {name: i for i, name in enumerate(nodes)}
    st._fingerprint = None
    st.points = _ptr_u64(padded)
    st.owners = _ptr_i32(owners)
    st.index = <const uint32_t*>_ptr_u32(index)
    return st

cdef const uint64_t* _ptr_u64(object arr):
    cdef const uint64_t[::1] v = arr
    return &v[0]

cdef const int32_t* _ptr_i32(object arr):
    cdef const int32_t[::1] v = arr
    return &v[0] if v.shape[0] else <const int32_t*>NULL

cdef const uint32_t* _ptr_u32(object arr):
    cdef const uint32_t[::1] v = arr
    return &v[0]


cdef bytes _name_bytes(object name):
    try:
        return (<str>name).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"node name {name!r} cannot be encoded as UTF-8 (lone surrogate)") from None


def build(nodes, weights, counts, int vnodes, str algorithm, seed):
    """A RingState for sorted `nodes` with `counts[i]` points each (points as DESIGN.md freezes them).

    `nodes` must be sorted, distinct str; the caller validated weights and counts.
    """
    cdef int algo = parse_algorithm(algorithm)
    cdef uint64_t s = parse_seed(algo, seed)
    cdef Py_ssize_t total = 0, c, pos = 0, maxlen = 0, i, nn = len(nodes)
    cdef int bits
    # Summed as Python ints first: a huge count must be refused, not overflow a Py_ssize_t.
    if sum(counts) > MAX_POINTS:
        raise ValueError(f"vnodes/weights give {sum(counts)} points, more than the limit of "
                         f"{MAX_POINTS}")
    for c in counts:
        total += c
    encoded = [_name_bytes(name) for name in nodes]
    for name_b in encoded:
        maxlen = max(maxlen, len(name_b))
    padded = _points_buffer(total)
    points = padded[:total]
    owners = np.empty(total, dtype=np.int32)
    cdef uint64_t[::1] pv = points
    cdef int32_t[::1] ov = owners
    cdef uint8_t* buf = <uint8_t*>PyMem_Malloc(POINT_CHUNK * (maxlen + 4) + 8)
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(nn):
            name_b = encoded[i]
            c = counts[i]
            _node_points(algo, s, <const uint8_t*><char*>name_b, len(name_b), c, buf, &pv[pos])
            ov[pos:pos + c] = <int32_t>i
            pos += c
    finally:
        PyMem_Free(buf)
    _sort_in_place(points, owners)
    return _make_state(tuple(nodes), tuple(weights), tuple(counts), vnodes, algorithm, seed,
                       False, padded, owners)


def build_ketama(nodes, weights, digests):
    """A libketama-compatible RingState: `digests[i]` md5 digests (4 points each) per node."""
    cdef Py_ssize_t total = 0, d, pos = 0, maxlen = 0, i, nn = len(nodes)
    for d in digests:
        total += 4 * d
    if total > MAX_POINTS:
        raise ValueError(f"ketama weights give {total} points, more than the limit of {MAX_POINTS}")
    encoded = [_name_bytes(name) for name in nodes]
    for name_b in encoded:
        maxlen = max(maxlen, len(name_b))
    padded = _points_buffer(total)
    points = padded[:total]
    owners = np.empty(total, dtype=np.int32)
    cdef uint64_t[::1] pv = points
    cdef int32_t[::1] ov = owners
    cdef uint8_t* buf = <uint8_t*>PyMem_Malloc(maxlen + 32)
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(nn):
            name_b = encoded[i]
            d = digests[i]
            if d == 0:   # no digest, no points (and &pv[pos] may be one past the end)
                continue
            _ketama_points(<const uint8_t*><char*>name_b, len(name_b), d, buf, &pv[pos])
            ov[pos:pos + 4 * d] = <int32_t>i
            pos += 4 * d
    finally:
        PyMem_Free(buf)
    _sort_in_place(points, owners)
    return _make_state(tuple(nodes), tuple(weights), tuple(4 * d for d in digests), 0, "md5", 0,
                       True, padded, owners)


def build_program(nodes, weights, points, owners, int algorithm, seed, bint wide, bint after):
    """A RingState for another program's continuum (ringkit.compat): `nodes` in the program's
    server order with their `weights`, `points` (uint32 when not
    `wide`, else uint64) already sorted, distinct, each owned by `owners[i]` (an index into
    `nodes`, in the program's server order), probed with the program's key hash `algorithm` (a
    PROG_* id or-ed with FORM_* flags, _hashing.pxd) and `seed` (the hash_tag bytes).

    32-bit points are stored shifted into the top half, as ketama's are; `after` makes the lookup
    take the first point strictly after the key's hash (uhashring) instead of at or after it.
    The caller resolved equal points the way the program does (one owner per point).
    """
    cdef Py_ssize_t n = len(points)
    if len(owners) != n:
        raise ValueError("internal: points and owners differ in length")
    if n > MAX_POINTS:
        raise ValueError(f"the continuum has {n} points, more than the limit of {MAX_POINTS}")
    if algorithm <= ALGO_MD5:
        raise ValueError("internal: not a program hash")
    values = np.asarray(points, dtype=np.uint64)
    if not wide:
        values = values << np.uint64(32)
    if n > 1 and not bool(np.all(values[1:] > values[:n - 1])):
        raise ValueError("internal: continuum points must be sorted and distinct")
    padded = _points_buffer(n)
    padded[:n] = values
    owner_array = np.ascontiguousarray(owners, dtype=np.int32)
    if n and (owner_array.min() < 0 or owner_array.max() >= len(nodes)):
        raise ValueError("internal: continuum owner out of range")
    counts = tuple(int(c) for c in np.bincount(owner_array, minlength=len(nodes)))
    cdef RingState st = _make_state(tuple(nodes), tuple(float(w) for w in weights), counts,
                                    0, "xxh64", 0, not wide, padded, owner_array)
    st.algo = algorithm
    st.seed_value = <uint64_t>seed
    st.seed = int(seed)
    st.algorithm = "program"
    st.after = after
    return st


cdef _sort_in_place(object points, object owners):
    cdef Py_ssize_t n = points.shape[0]
    if n == 0:
        return
    cdef int bits = _bits_for(n)
    cdef uint64_t[::1] pv = points
    cdef int32_t[::1] ov = owners
    tmp_p = np.empty(n, dtype=np.uint64)
    tmp_o = np.empty(n, dtype=np.int32)
    counts = np.empty((1 << bits) + 1, dtype=np.uint32)
    cdef uint64_t[::1] tpv = tmp_p
    cdef int32_t[::1] tov = tmp_o
    cdef uint32_t[::1] cv = counts
    with nogil:
        _sort_points(&pv[0], &ov[0], n, bits, &tpv[0], &tov[0], &cv[0])


def with_node(RingState st, str name, weight, object count):
    """A new RingState: `st` plus node `name` with `count` points, merged in (no rebuild)."""
    if st.ketama:
        raise TypeError("internal: ketama rings are rebuilt, not merged")
    # Checked as a Python int: a huge count must be refused, not overflow a Py_ssize_t.
    if st.npoints + count > MAX_POINTS:
        raise ValueError(f"adding {name!r} would give {st.npoints + count} points, more than the "
                         f"limit of {MAX_POINTS}")
    cdef Py_ssize_t ncount = count
    nodes = list(st.nodes)
    # Sorted position of the new name; owners at or after it shift up by one.
    cdef Py_ssize_t j = 0, i, n = st.npoints
    j = bisect_left(nodes, name)
    name_b = _name_bytes(name)
    new_points = np.empty(count, dtype=np.uint64)
    cdef uint64_t[::1] npv = new_points
    cdef uint8_t* buf = <uint8_t*>PyMem_Malloc(POINT_CHUNK * (len(name_b) + 4) + 8)
    if buf == NULL:
        raise MemoryError()
    try:
        _node_points(st.algo, st.seed_value, <const uint8_t*><char*>name_b, len(name_b), count,
                     buf, &npv[0])
    finally:
        PyMem_Free(buf)
    new_points.sort()   # one owner: sorting the points is enough
    padded = _points_buffer(n + count)
    points = padded[:n + count]
    owners = np.empty(n + count, dtype=np.int32)
    cdef uint64_t[::1] pv = points
    cdef int32_t[::1] ov = owners
    with nogil:
        _merge_node(st.points, st.owners, n, <int32_t>j, &npv[0], ncount, &pv[0], &ov[0])
    nodes.insert(j, name)
    weights = list(st.weight_values)
    weights.insert(j, weight)
    counts = list(st.counts)
    counts.insert(j, count)
    return _make_state(tuple(nodes), tuple(weights), tuple(counts), st.vnodes, st.algorithm,
                       st.seed, False, padded, owners)


def without_node(RingState st, str name):
    """A new RingState: `st` without node `name` (its points filtered out, no rebuild)."""
    cdef Py_ssize_t j = st.position(name), i, k = 0, n = st.npoints
    cdef int32_t jj = <int32_t>j
    cdef Py_ssize_t keep = n - st.counts[j]
    padded = _points_buffer(keep)
    points = padded[:keep]
    owners = np.empty(keep, dtype=np.int32)
    cdef uint64_t[::1] pv = points
    cdef int32_t[::1] ov = owners
    cdef int32_t o
    with nogil:
        for i in range(n):
            o = st.owners[i]
            if o != jj:
                pv[k] = st.points[i]
                ov[k] = o - 1 if o > jj else o
                k += 1
    nodes = list(st.nodes)
    del nodes[j]
    weights = list(st.weight_values)
    del weights[j]
    counts = list(st.counts)
    del counts[j]
    return _make_state(tuple(nodes), tuple(weights), tuple(counts), st.vnodes, st.algorithm,
                       st.seed, False, padded, owners)


# --------------------------------------------------------------------------------------------------
# Lookups: the compiled base of HashRing and RingSnapshot

cdef Py_ssize_t _check_n(object n, RingState st) except -1:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if n > len(st.nodes):
        raise ValueError(f"n={n} is larger than the number of nodes ({len(st.nodes)})")
    # The walk can only find nodes that own points; asking for more would read unset slots.
    if n > st.nplaced:
        raise ValueError(f"n={n} is larger than the number of nodes that own points "
                         f"({st.nplaced}; a ketama share too small for one digest gives none)")
    return n

cdef inline Py_ssize_t _walk_distinct(const uint64_t* points, const int32_t* owners,
                                      Py_ssize_t npoints, Py_ssize_t start, Py_ssize_t n,
                                      uint32_t* stamps, uint32_t stamp,
                                      int32_t* out) noexcept nogil:
    """Collect n distinct owners walking clockwise from `start`; stamps[o] == stamp marks seen."""
    cdef Py_ssize_t found = 0, p = start, steps = 0
    cdef int32_t o
    while found < n and steps < npoints:
        o = owners[p]
        if stamps[o] != stamp:
            stamps[o] = stamp
            out[found] = o
            found += 1
        p += 1
        if p == npoints:
            p = 0
        steps += 1
    return found


@cython.final
cdef class _Stamps:
    """Scratch 'seen' markers for preference walks, one uint32 per node."""
    cdef uint32_t* data
    cdef Py_ssize_t size

    def __cinit__(self, Py_ssize_t size):
        self.data = <uint32_t*>PyMem_Calloc(max(size, 1), sizeof(uint32_t))
        self.size = size
        if self.data == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.data)


cdef object _finish(object out, object target):
    """What a batch call returns: `target`, copied into `out` first when the kernel wrote into a
    temporary because `out` overlapped its input."""
    if out is None or target is out:
        return target
    out[...] = target
    return out


cdef class RingBase:
    """The compiled lookups of :class:`ringkit.HashRing` and :class:`ringkit.RingSnapshot`.

    Every lookup reads the ring's current immutable state (one reference, swapped whole by a
    change), so readers never block and never see half a change. Inspection and serialisation
    (``shares``, ``load``, ``movement``, ``to_dict``) live in ``ringkit.ring``, above this core.
    """
    cdef RingState _state

    cdef RingState _current(self):
        cdef RingState st
        # A plain read under the GIL; on free-threaded builds the critical section keeps the
        # reference valid while a writer swaps it.
        with cython.critical_section(self):
            st = self._state
        return st

    cdef RingState _nonempty(self):
        cdef RingState st = self._current()
        if st is None or st.npoints == 0:
            raise EmptyRingError("the ring has no nodes")
        return st

    @classmethod
    def _of(cls, RingState state not None):
        """A new `cls` (a RingBase subclass) over `state`, without calling its __init__."""
        cdef RingBase ring = cls.__new__(cls)
        ring._state = state
        return ring

    def _swap_state(self, RingState state not None) -> None:
        """Make `state` the ring's state (one reference swap: readers see the old or the new)."""
        with cython.critical_section(self):
            self._state = state

    @property
    def _ring_state(self) -> RingState:
        """The current immutable state."""
        return self._current()

    # -- single lookups -------------------------------------------------------------------------

    def get(self, key: str | bytes | bytearray | memoryview | int) -> str:
        """The node that owns `key`: the owner of the first point at or after its hash.

        ``key`` is a str (hashed as UTF-8), a bytes-like object or an int (its 8-byte
        two's-complement form). Raises EmptyRingError on a ring without nodes.

        >>> from ringkit import HashRing
        >>> HashRing(["a", "b", "c"]).get("user:42") in ("a", "b", "c")
        True
        """
        cdef RingState st = self._nonempty()
        cdef uint64_t h = st.key_hash(key, "key")
        return st.nodes[st.owners[st.find(h)]]

    def __getitem__(self, key: str | bytes | bytearray | memoryview | int) -> str:
        """``ring[key]`` is ``ring.get(key)``."""
        cdef RingState st = self._nonempty()
        cdef uint64_t h = st.key_hash(key, "key")
        return st.nodes[st.owners[st.find(h)]]

    def get_hash(self, h: int) -> str:
        """The node that owns an already-hashed position `h` (an int in 0..2**64-1).

        On a ketama ring positions are 32-bit hashes shifted into the top half (``h32 << 32``).
        """
        cdef RingState st = self._nonempty()
        cdef uint64_t position
        if type(h) is not int:
            if isinstance(h, bool) or not hasattr(type(h), "__index__"):
                raise TypeError(f"h must be an int (a uint64 ring position), got "
                                f"{type(h).__name__}")
            h = h.__index__()
        if not 0 <= h <= 0xFFFFFFFFFFFFFFFF:
            text = repr(h)
            raise ValueError(f"h must be a ring position in 0..2**64-1, got "
                             f"{text if len(text) <= 40 else text[:37] + '...'}")
        position = h
        return st.nodes[st.owners[st.find(position)]]

    def preference_list(self, key: str | bytes | bytearray | memoryview | int,
                        n: int) -> list[str]:
        """`n` distinct nodes for `key`, walking clockwise from its position, primary first.

        The first is ``get(key)``; the others are where the key's replicas go, and where it moves
        if the nodes before them leave. ``n`` is at most the number of nodes.
        """
        cdef RingState st = self._nonempty()
        cdef Py_ssize_t count = _check_n(n, st)
        cdef uint64_t h = st.key_hash(key, "key")
        cdef _Stamps stamps = _Stamps(len(st.nodes))
        cdef int32_t* picked = <int32_t*>PyMem_Malloc(count * sizeof(int32_t))
        if picked == NULL:
            raise MemoryError()
        try:
            _walk_distinct(st.points, st.owners, st.npoints, st.find(h), count, stamps.data, 1,
                           picked)
            return [st.nodes[picked[i]] for i in range(count)]
        finally:
            PyMem_Free(picked)

    # -- batch lookups ----------------------------------------------------------------------------

    def get_many(self, keys: Iterable[Any] | npt.ArrayLike,
                 out: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
        """The owner of each key, as int32 indices into ``nodes`` of the snapshot that answered.

        ``keys`` is a list or tuple of keys, a 1-d numpy array or a pyarrow string/binary/integer
        array (see :func:`ringkit.hash64_many`); numeric and fixed-width arrays are read without
        the GIL. ``out``, if given, is a writeable, aligned, C-contiguous int32 array of
        ``len(keys)`` that receives the indices and is returned. If another thread may change
        the ring meanwhile, use a ``snapshot()`` and its ``nodes``.
        """
        cdef RingState st = self._nonempty()
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t n = len(batch), i
        result = checked_output(out, _INT32, (n,), "out")
        cdef int32_t[::1] rv = result
        cdef int32_t* dst
        cdef const uint64_t* hashes
        # Hashed a block at a time, each looked up while its hashes are in the cache; all of
        # them before out is written when out may overlap the keys.
        cdef KeyBlocks blocks = KeyBlocks(batch, n, st.algo, st.seed_value, "keys",
                                          out is None or not out_overlaps_keys(result, batch))
        while blocks.next():
            dst = &rv[blocks.start]
            hashes = blocks.hashes
            with nogil:
                for i in range(blocks.count):
                    dst[i] = st.owners[st.find(key_position(st, hashes[i]))]
        return result

    def locate(self, hashes: npt.NDArray[np.uint64],
               out: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
        """The owner of each already-hashed uint64 position, as int32 indices into ``nodes``.

        ``hashes`` is a 1-d uint64 array (any byte order or layout: one that is not aligned,
        native and C-contiguous is read from a copy). ``out`` is as in :meth:`get_many`; if it
        overlaps ``hashes`` the owners are found into a temporary and copied into it.
        """
        cdef RingState st = self._nonempty()
        if not isinstance(hashes, np.ndarray):
            raise TypeError(f"hashes must be a numpy uint64 array, got {type(hashes).__name__}")
        if hashes.dtype.kind != "u" or hashes.dtype.itemsize != 8:
            raise TypeError(f"hashes must have dtype uint64, got {hashes.dtype}")
        if hashes.ndim != 1:
            raise ValueError(f"hashes must be 1-dimensional, got shape {hashes.shape}")
        source = checked_input(hashes, _UINT64, "hashes")
        cdef const uint64_t[::1] hv = source
        cdef Py_ssize_t n = hv.shape[0], i
        target = checked_output(out, _INT32, (n,), "out")
        if out is not None and overlaps(target, source):
            target = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] rv = target
        with nogil:
            for i in range(n):
                rv[i] = st.owners[st.find(hv[i])]
        return _finish(out, target)

    def preference_many(self, keys: Iterable[Any] | npt.ArrayLike, n: int,
                        out: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
        """`n` distinct nodes per key, clockwise, primary first: int32 indices into ``nodes``.

        Returns an array of shape ``(len(keys), n)``; row i is ``preference_list(keys[i], n)``.
        ``out``, if given, is a writeable, aligned, C-contiguous int32 array of that shape.
        """
        cdef RingState st = self._nonempty()
        cdef Py_ssize_t count = _check_n(n, st)
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t m = len(batch), i
        result = checked_output(out, _INT32, (m, count), "out")
        cdef const uint64_t[::1] hashes = st.batch_hashes(batch, m, "keys")
        cdef _Stamps stamps = _Stamps(len(st.nodes))
        cdef int32_t[:, ::1] rv = result
        cdef uint32_t stamp = 0
        cdef Py_ssize_t nn = len(st.nodes), o
        if m:
            with nogil:
                for i in range(m):
                    stamp += 1
                    if stamp == 0:  # wrapped: clear the markers once every 2**32 keys
                        for o in range(nn):
                            stamps.data[o] = 0
                        stamp = 1
                    _walk_distinct(st.points, st.owners, st.npoints, st.find(hashes[i]), count,
                                   stamps.data, stamp, &rv[i, 0])
        return result

    def assign_bounded(self, keys: Iterable[Any] | npt.ArrayLike,
                       load_factor: float = 1.25) -> npt.NDArray[np.int32]:
        """Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016).

        Each node takes at most ceil(load_factor * len(keys) * its weight share) keys; a key whose
        owner is full walks clockwise to the next node with room. Keys are placed in order, so
        the result is deterministic for the same keys in the same order. Returns int32 indices
        into ``nodes``.
        """
        cdef RingState st = self._nonempty()
        cdef double c
        if isinstance(load_factor, bool) or not isinstance(load_factor, (int, float, np.floating,
                                                                          np.integer)):
            raise TypeError(f"load_factor must be a number, got {type(load_factor).__name__}")
        c = load_factor
        if not isfinite(c) or c < 1.0:
            raise ValueError(f"load_factor must be a finite number >= 1, got {load_factor}")
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t m = len(batch), i, nn = len(st.nodes)
        result = np.empty(m, dtype=np.int32)
        cdef const uint64_t[::1] hashes = st.batch_hashes(batch, m, "keys")
        # Only nodes that own points can take keys (a ketama node may own none: counting its
        # capacity would leave the others short). No node can need more than m, which also
        # keeps a huge load_factor finite. The capacities are the walk's shares, with room 1.
        placed = [w if k else 0.0 for w, k in zip(st.weight_values, st.counts)]
        total_weight = sum(placed)
        capacity = np.array([min(m, ceil(c * m * w / total_weight)) for w in placed],
                            dtype=np.float64)
        load = np.zeros(nn, dtype=np.int64)
        cdef const double[::1] cap = capacity
        cdef int64_t[::1] ld = load
        cdef int32_t[::1] rv = result
        cdef Py_ssize_t o, p
        if m:
            with nogil:
                for i in range(m):
                    p = st.find(hashes[i])
                    o = bounded_walk(st, p, NULL, &ld[0], &cap[0], 1.0, NULL)
                    if o < 0:   # no capacity anywhere (cannot happen for weights > 0)
                        o = st.owners[p]
                    ld[o] += 1
                    rv[i] = <int32_t>o
        return result

    # -- description ------------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names, sorted; batch results index this tuple."""
        cdef RingState st = self._current()
        return () if st is None else st.nodes

    @property
    def weights(self) -> dict[str, float]:
        """{name: weight} for every node."""
        cdef RingState st = self._current()
        return {} if st is None else dict(zip(st.nodes, st.weight_values))

    @property
    def vnodes(self) -> int:
        """Points per unit of weight (0 for a ketama ring, whose shares set the points)."""
        return self._current().vnodes

    @property
    def algorithm(self) -> str:
        """The hash algorithm that places points and keys."""
        return self._current().algorithm

    @property
    def seed(self) -> int:
        """The hash seed."""
        return self._current().seed

    @property
    def is_ketama(self) -> bool:
        """Whether this ring is libketama-compatible (HashRing.ketama)."""
        return self._current().ketama

    @property
    def points(self) -> npt.NDArray[np.uint64]:
        """The sorted ring points (read-only uint64 array)."""
        return self._current().points_array

    @property
    def owners(self) -> npt.NDArray[np.int32]:
        """The owner of each point (read-only int32 array of indices into nodes)."""
        return self._current().owners_array

    @property
    def nbytes(self) -> int:
        """Bytes held by points, owners and the lookup index."""
        cdef RingState st = self._current()
        return st.points_array.nbytes + st.owners_array.nbytes + st.index_array.nbytes

    def __len__(self) -> int:
        """The number of nodes."""
        cdef RingState st = self._current()
        return 0 if st is None else len(st.nodes)

    def __contains__(self, name: object) -> bool:
        """Whether `name` is one of the nodes."""
        cdef RingState st = self._current()
        return st is not None and isinstance(name, str) and name in st.positions

    def __iter__(self) -> Iterator[str]:
        """The node names, sorted."""
        return iter(self.nodes)

    def fingerprint(self) -> str:
        """A hex digest of the placement (nodes, points and owners): equal fingerprints route
        alike, whatever built the ring."""
        cdef RingState st = self._current()
        if st._fingerprint is None:
            names = "\x00".join(st.nodes).encode("utf-8", "surrogatepass")
            head = f"ringkit-ring/{FORMAT}/{int(st.ketama)}/{len(st.nodes)}/".encode()
            parts = [_digest(head + names, 0), _digest(st.points_array.tobytes(), 1),
                     _digest(st.owners_array.tobytes(), 2)]
            st._fingerprint = "".join(f"{p:016x}" for p in parts)
        return st._fingerprint


cdef uint64_t _digest(bytes data, uint64_t seed):
    return hash_bytes(ALGO_XXH64, <const uint8_t*><const char*>data, len(data), seed)
