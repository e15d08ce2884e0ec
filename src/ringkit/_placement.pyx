# cython: freethreading_compatible = True
"""Placements beyond the ring: weighted rendezvous (highest random weight), Lamping and Veach's
jump consistent hash, and two programs' placements that are no continuum (twemproxy's modula
table and pymemcache's murmur3 rendezvous).

Each follows the ring's conventions: an immutable state read once per call (a change swaps it
whole), ``get`` for one key, ``get_many`` for a batch (int32 indices into ``nodes``, computed
without the GIL), errors that name the argument.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport log
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cimport cython

from ringkit._arrays cimport checked_input, checked_output
from ringkit._hashing cimport (
    ALGO_XXH64,
    as_batch,
    hash_batch,
    hash_bytes,
    hash_object,
    murmur3_32,
    parse_algorithm,
    parse_seed,
    xxh64_u64,
)

import numpy as np

from ringkit.errors import EmptyRingError

cdef object _INT32 = np.dtype(np.int32)
cdef object _UINT64 = np.dtype(np.uint64)
cdef object _UINT8 = np.dtype(np.uint8)
cdef object _UINT32 = np.dtype(np.uint32)

#: The most nodes a jump placement takes (its bucket count is an int32).
MAX_BUCKETS = 2**31 - 1


cdef Py_ssize_t _check_n(object n, Py_ssize_t nodes) except -1:
    if isinstance(n, bool) or not hasattr(type(n), "__index__"):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    value = n.__index__()
    if not 1 <= value <= nodes:
        raise ValueError(f"n must be between 1 and the number of nodes ({nodes}), got {value}")
    return value


cdef object _hashes(object batch, Py_ssize_t n, int algo, uint64_t seed, str argname):
    """A batch hashed into a fresh uint64 array (one spare slot, so it is never empty)."""
    arr = np.empty(n + 1, dtype=np.uint64)
    cdef uint64_t[::1] hv = arr
    if n:
        hash_batch(batch, algo, seed, &hv[0], n, argname)
    return arr


# --------------------------------------------------------------------------------------------------
# Weighted rendezvous

cdef inline double _unit(uint64_t x) noexcept nogil:
    """x's top 53 bits as a double strictly inside (0, 1)."""
    return (<double>(x >> 11) + 0.5) * (1.0 / 9007199254740992.0)


@cython.final
cdef class RendezvousState:
    """One immutable rendezvous placement: sorted node names, their weights and hash seeds."""
    cdef readonly tuple nodes
    cdef readonly tuple weight_values
    cdef readonly str algorithm
    cdef readonly object seed
    cdef readonly object node_seeds_array   # uint64[n]
    cdef readonly object weights_array      # float64[n]
    cdef readonly dict positions
    cdef int algo
    cdef uint64_t seed_value
    cdef bint equal
    cdef Py_ssize_t _count
    cdef const uint64_t* node_seeds
    cdef const double* weights

    def __reduce__(self):
        raise TypeError("RendezvousState is internal; pickle the Rendezvous instead")

    cdef inline Py_ssize_t best(self, uint64_t h) noexcept nogil:
        """The node with the highest score w / -ln(u) for the key hashed to h (u uniform in
        (0, 1) from xxh64 of h seeded with the node's seed); equal scores: the larger draw."""
        cdef Py_ssize_t n = self._count, j, top = 0
        cdef uint64_t x, bx = xxh64_u64(h, self.node_seeds[0])
        cdef double s, bs
        if self.equal:
            for j in range(1, n):
                x = xxh64_u64(h, self.node_seeds[j])
                if x > bx:
                    bx = x
                    top = j
            return top
        bs = self.weights[0] / -log(_unit(bx))
        for j in range(1, n):
            x = xxh64_u64(h, self.node_seeds[j])
            s = self.weights[j] / -log(_unit(x))
            if s > bs or (s == bs and x > bx):
                bs = s
                bx = x
                top = j
        return top

    cdef void ranked(self, uint64_t h, Py_ssize_t want, double* scores, uint64_t* draws,
                     int32_t* out) noexcept nogil:
        """The `want` best nodes for hash h, best first (scores/draws: scratch of count())."""
        cdef Py_ssize_t n = self._count, j, k, top
        cdef uint64_t x
        for j in range(n):
            x = xxh64_u64(h, self.node_seeds[j])
            draws[j] = x
            scores[j] = 0.0 if self.equal else self.weights[j] / -log(_unit(x))
        for k in range(want):
            top = -1
            for j in range(n):
                if scores[j] < 0.0:
                    continue            # taken
                if top < 0 or scores[j] > scores[top] or \
                        (scores[j] == scores[top] and draws[j] > draws[top]):
                    top = j
            out[k] = <int32_t>top
            scores[top] = -1.0


def build_rendezvous(nodes, weights, str algorithm, seed):
    """A RendezvousState for sorted, distinct `nodes` with positive finite `weights` (checked by
    the caller)."""
    cdef RendezvousState st = RendezvousState.__new__(RendezvousState)
    cdef Py_ssize_t n = len(nodes), i
    cdef bytes encoded
    st.algo = parse_algorithm(algorithm)
    st.seed_value = parse_seed(st.algo, seed)
    st.algorithm = algorithm
    st.seed = int(st.seed_value)
    st.nodes = tuple(nodes)
    st.weight_values = tuple(float(w) for w in weights)
    seeds = np.empty(max(n, 1), dtype=np.uint64)
    cdef uint64_t[::1] sv = seeds
    for i in range(n):
        encoded = (<str>st.nodes[i]).encode("utf-8")
        # The node's draw seed: xxh64 of its name under the placement's seed, whatever the key
        # algorithm (keys are hashed with `algorithm`, then drawn with xxh64 per node).
        sv[i] = hash_bytes(ALGO_XXH64, <const uint8_t*><const char*>encoded, len(encoded),
                           st.seed_value)
    w = np.ones(max(n, 1), dtype=np.float64)
    w[:n] = st.weight_values
    if n:
        # Scores compare weights by their ratios only: scaled to at most 1, no score overflows
        # (a weight of 1e308 over -ln(u) near 1e-16 would be inf and tie).
        w /= w[:n].max()
    seeds.flags.writeable = False
    w.flags.writeable = False
    st.node_seeds_array = seeds
    st.weights_array = w
    st.positions = {name: i for i, name in enumerate(st.nodes)}
    st.equal = n == 0 or len(set(st.weight_values)) == 1
    st._count = n
    cdef const uint64_t[::1] sview = seeds
    cdef const double[::1] wview = w
    st.node_seeds = &sview[0]
    st.weights = &wview[0]
    return st


cdef class RendezvousBase:
    """The compiled lookups of :class:`ringkit.Rendezvous`."""
    cdef RendezvousState _state

    cdef RendezvousState _current(self):
        cdef RendezvousState st
        with cython.critical_section(self):
            st = self._state
        return st

    cdef RendezvousState _nonempty(self):
        cdef RendezvousState st = self._current()
        if st is None or st._count == 0:
            raise EmptyRingError("the placement has no nodes")
        return st

    def _swap_state(self, RendezvousState state not None) -> None:
        with cython.critical_section(self):
            self._state = state

    @property
    def _placement_state(self) -> RendezvousState:
        return self._current()

    def get(self, key):
        """The node with the highest weighted score for `key` (str, bytes-like or int, hashed
        with the placement's algorithm and seed). Raises EmptyRingError with no nodes."""
        cdef RendezvousState st = self._nonempty()
        cdef uint64_t h = hash_object(key, st.algo, st.seed_value, "key")
        return st.nodes[st.best(h)]

    def __getitem__(self, key):
        """``placement[key]`` is ``placement.get(key)``."""
        return self.get(key)

    def get_many(self, keys, out=None):
        """The owner of each key, as int32 indices into ``nodes`` (see HashRing.get_many)."""
        cdef RendezvousState st = self._nonempty()
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t n = len(batch), i
        result = checked_output(out, _INT32, (n,), "out")
        cdef const uint64_t[::1] hv = _hashes(batch, n, st.algo, st.seed_value, "keys")
        cdef int32_t[::1] rv = result
        if n:
            with nogil:
                for i in range(n):
                    rv[i] = <int32_t>st.best(hv[i])
        return result

    def preference_list(self, key, n):
        """`n` distinct nodes for `key`, best score first: where its replicas go, and where it
        moves when the nodes before them leave."""
        cdef RendezvousState st = self._nonempty()
        cdef Py_ssize_t want = _check_n(n, st._count)
        cdef uint64_t h = hash_object(key, st.algo, st.seed_value, "key")
        picked = np.empty((1, want), dtype=np.int32)
        self._rank(st, np.array([h], dtype=np.uint64), want, picked)
        return [st.nodes[i] for i in picked[0]]

    def preference_many(self, keys, n, out=None):
        """`n` distinct nodes per key, best first: int32 indices of shape (len(keys), n)."""
        cdef RendezvousState st = self._nonempty()
        cdef Py_ssize_t want = _check_n(n, st._count)
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t m = len(batch)
        result = checked_output(out, _INT32, (m, want), "out")
        hashes = _hashes(batch, m, st.algo, st.seed_value, "keys")
        self._rank(st, hashes, want, result)
        return result

    cdef _rank(self, RendezvousState st, object hashes, Py_ssize_t want, object result):
        cdef const uint64_t[::1] hv = hashes
        cdef int32_t[:, ::1] rv = result
        cdef Py_ssize_t m = rv.shape[0], i, n = st._count
        cdef double* scores = <double*>PyMem_Malloc(n * sizeof(double))
        cdef uint64_t* draws = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        if scores == NULL or draws == NULL:
            PyMem_Free(scores)
            PyMem_Free(draws)
            raise MemoryError()
        try:
            with nogil:
                for i in range(m):
                    st.ranked(hv[i], want, scores, draws, &rv[i, 0])
        finally:
            PyMem_Free(scores)
            PyMem_Free(draws)

    @property
    def nodes(self):
        """Node names, sorted; batch results index this tuple."""
        cdef RendezvousState st = self._current()
        return () if st is None else st.nodes

    @property
    def weights(self):
        """{name: weight} for every node."""
        cdef RendezvousState st = self._current()
        return {} if st is None else dict(zip(st.nodes, st.weight_values))

    @property
    def algorithm(self):
        """The hash algorithm keys go through before the draws."""
        return self._current().algorithm

    @property
    def seed(self):
        """The hash seed."""
        return self._current().seed

    def __len__(self):
        cdef RendezvousState st = self._current()
        return 0 if st is None else st._count

    def __contains__(self, name):
        cdef RendezvousState st = self._current()
        return st is not None and isinstance(name, str) and name in st.positions

    def __iter__(self):
        return iter(self.nodes)


# --------------------------------------------------------------------------------------------------
# Jump consistent hash

cdef inline int32_t jump_bucket(uint64_t key, int32_t buckets) noexcept nogil:
    """Lamping and Veach (2014), in double precision as the published code computes it."""
    cdef int64_t b = -1, j = 0
    while j < buckets:
        b = j
        key = key * <uint64_t>2862933555777941757ULL + 1
        j = <int64_t>(<double>(b + 1) * (<double>(1LL << 31) / <double>((key >> 33) + 1)))
    return <int32_t>b


cdef enum:
    LANES = 8


cdef void jump_many(const uint64_t* keys, Py_ssize_t n, int32_t buckets,
                    int32_t* out) noexcept nogil:
    """jump_bucket of each key, LANES keys in step: their divisions are independent, so the
    CPU overlaps them instead of waiting on one chain (the same arithmetic, the same answers)."""
    cdef uint64_t k[LANES]
    cdef int64_t b[LANES]
    cdef int64_t j[LANES]
    cdef Py_ssize_t base = 0, lane, stop
    cdef bint running
    while base + LANES <= n:
        for lane in range(LANES):
            k[lane] = keys[base + lane]
            b[lane] = -1
            j[lane] = 0
        running = True
        while running:
            running = False
            for lane in range(LANES):
                if j[lane] < buckets:
                    b[lane] = j[lane]
                    k[lane] = k[lane] * <uint64_t>2862933555777941757ULL + 1
                    j[lane] = <int64_t>(<double>(b[lane] + 1) *
                                        (<double>(1LL << 31) / <double>((k[lane] >> 33) + 1)))
                    running = True
        for lane in range(LANES):
            out[base + lane] = <int32_t>b[lane]
        base += LANES
    for lane in range(base, n):
        out[lane] = jump_bucket(keys[lane], buckets)


@cython.final
cdef class JumpState:
    """One immutable jump placement: node names in bucket order."""
    cdef readonly tuple nodes
    cdef readonly str algorithm
    cdef readonly object seed
    cdef readonly dict positions
    cdef int algo
    cdef uint64_t seed_value
    cdef int32_t buckets

    def __reduce__(self):
        raise TypeError("JumpState is internal; pickle the JumpHash instead")


def build_jump(nodes, str algorithm, seed):
    """A JumpState for distinct `nodes` (in bucket order, checked by the caller)."""
    cdef JumpState st = JumpState.__new__(JumpState)
    if len(nodes) > MAX_BUCKETS:
        raise ValueError(f"nodes: a jump placement takes at most {MAX_BUCKETS} nodes")
    st.algo = parse_algorithm(algorithm)
    st.seed_value = parse_seed(st.algo, seed)
    st.algorithm = algorithm
    st.seed = int(st.seed_value)
    st.nodes = tuple(nodes)
    st.buckets = <int32_t>len(st.nodes)
    st.positions = {name: i for i, name in enumerate(st.nodes)}
    return st


cdef inline bint _is_int(object key):
    return (isinstance(key, int) or isinstance(key, (np.integer, np.bool_)))


cdef uint64_t _jump_key(JumpState st, object key, str argname) except? 0xFFFFFFFFFFFFFFFF:
    """An int key as jump.hash takes it (its value modulo 2**64), any other through hash64."""
    if isinstance(key, str):
        return hash_object(key, st.algo, st.seed_value, argname)
    if _is_int(key):
        return <uint64_t>(int(key) & 0xFFFFFFFFFFFFFFFF)
    return hash_object(key, st.algo, st.seed_value, argname)


cdef object _jump_keys(JumpState st, object batch, Py_ssize_t n, str argname):
    """The uint64 jump keys of a batch: integer arrays as their values modulo 2**64 (no copy
    when already uint64), integer items of a list likewise, other keys through hash64."""
    if isinstance(batch, np.ndarray) and batch.dtype.kind in "iub":
        return checked_input(batch.astype(np.uint64, copy=False), _UINT64, argname)
    if not isinstance(batch, (list, tuple)) and batch.__class__.__module__.startswith("pyarrow"):
        kind = str(batch.type)
        if kind.startswith(("int", "uint", "bool")):
            if batch.null_count:
                raise ValueError(f"{argname} holds nulls; null keys cannot be placed")
            return _jump_keys(st, batch.to_numpy(zero_copy_only=False), n, argname)
        return _hashes(batch, n, st.algo, st.seed_value, argname)[:n]
    if isinstance(batch, (list, tuple)):
        return _jump_list(st, batch, n, argname)
    if isinstance(batch, np.ndarray) and batch.dtype.kind == "O":
        # Items of an object array are keys like a list's: an int is its own jump key.
        return _jump_list(st, batch.tolist(), n, argname)
    return _hashes(batch, n, st.algo, st.seed_value, argname)[:n]


cdef object _jump_list(JumpState st, object batch, Py_ssize_t n, str argname):
    """A list's jump keys in one pass: ints as their value modulo 2**64, str and bytes-like
    keys through hash64 (an error names the item)."""
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] ov = out
    cdef Py_ssize_t i
    for i in range(n):
        key = batch[i]
        if type(key) is str:
            ov[i] = hash_object(key, st.algo, st.seed_value, argname)
        else:
            ov[i] = _jump_key(st, key, f"{argname}[{i}]")
    return out


cdef class JumpBase:
    """The compiled lookups of :class:`ringkit.JumpHash`."""
    cdef JumpState _state

    cdef JumpState _current(self):
        cdef JumpState st
        with cython.critical_section(self):
            st = self._state
        return st

    cdef JumpState _nonempty(self):
        cdef JumpState st = self._current()
        if st is None or st.buckets == 0:
            raise EmptyRingError("the placement has no nodes")
        return st

    def _swap_state(self, JumpState state not None) -> None:
        with cython.critical_section(self):
            self._state = state

    @property
    def _placement_state(self) -> JumpState:
        return self._current()

    def get(self, key):
        """The node of `key`'s bucket: an int key as ``jump.hash(key, len(nodes))`` takes it
        (modulo 2**64), any other key (str, bytes-like) hashed with hash64 first."""
        cdef JumpState st = self._nonempty()
        return st.nodes[jump_bucket(_jump_key(st, key, "key"), st.buckets)]

    def __getitem__(self, key):
        """``placement[key]`` is ``placement.get(key)``."""
        return self.get(key)

    def get_many(self, keys, out=None):
        """The bucket of each key, as int32 indices into ``nodes`` (see HashRing.get_many)."""
        cdef JumpState st = self._nonempty()
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t n = len(batch), i
        result = checked_output(out, _INT32, (n,), "out")
        cdef const uint64_t[::1] kv = _jump_keys(st, batch, n, "keys")
        cdef int32_t[::1] rv = result
        cdef int32_t buckets = st.buckets
        if n:
            with nogil:
                jump_many(&kv[0], n, buckets, &rv[0])
        return result

    @property
    def nodes(self):
        """Node names in bucket order (the order given; added nodes come last)."""
        cdef JumpState st = self._current()
        return () if st is None else st.nodes

    @property
    def algorithm(self):
        """The hash algorithm of keys that are not ints."""
        return self._current().algorithm

    @property
    def seed(self):
        """The hash seed of keys that are not ints."""
        return self._current().seed

    def __len__(self):
        cdef JumpState st = self._current()
        return 0 if st is None else st.buckets

    def __contains__(self, name):
        cdef JumpState st = self._current()
        return st is not None and isinstance(name, str) and name in st.positions

    def __iter__(self):
        return iter(self.nodes)


def jump_hash(key, num_buckets):
    """``jump.hash(key, num_buckets)`` of the jump-consistent-hash package: the bucket in
    [0, num_buckets) of an int key (taken modulo 2**64)."""
    if not _is_int(key):
        raise TypeError(f"key must be an int, got {type(key).__name__}")
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)):
        raise TypeError(f"num_buckets must be an int, got {type(num_buckets).__name__}")
    if not 1 <= num_buckets <= MAX_BUCKETS:
        raise ValueError(f"num_buckets must be between 1 and {MAX_BUCKETS}, got {num_buckets}")
    return jump_bucket(<uint64_t>(int(key) & 0xFFFFFFFFFFFFFFFF), <int32_t>num_buckets)


# --------------------------------------------------------------------------------------------------
# twemproxy's modula distribution: a table with each server repeated `weight` times

cdef inline uint64_t _slot(uint64_t h, uint64_t size) noexcept nogil:
    """h % size; in 32 bits when both fit (program hashes are 32-bit; a 64-bit division costs
    several times a 32-bit one)."""
    if h <= 0xFFFFFFFFU and size <= 0xFFFFFFFFU:
        return <uint32_t>h % <uint32_t>size
    return h % size


cdef class ModulaBase:
    """A key hash modulo a table of servers (twemproxy ``distribution: modula``)."""
    cdef readonly tuple _names
    cdef readonly object table            # int32[total weight]
    cdef int algo
    cdef uint64_t seed_value
    cdef const int32_t* slots
    cdef uint64_t size

    def __init__(self, nodes, table, int algorithm, seed):
        if not len(nodes) or not len(table):
            raise ValueError("nodes: a modula placement needs servers")
        self._names = tuple(nodes)
        values = np.ascontiguousarray(table, dtype=np.int32)
        if values.min() < 0 or values.max() >= len(self._names):
            raise ValueError("internal: modula slot out of range")
        values.flags.writeable = False
        self.table = values
        cdef const int32_t[::1] tv = values
        self.slots = &tv[0]
        self.size = <uint64_t>values.shape[0]
        self.algo = algorithm
        self.seed_value = <uint64_t>seed

    def get(self, key):
        """The server at ``table[hash(key) % len(table)]``."""
        return self._names[self.slots[_slot(hash_object(key, self.algo, self.seed_value, "key"),
                                            self.size)]]

    def __getitem__(self, key):
        """``placement[key]`` is ``placement.get(key)``."""
        return self.get(key)

    def get_many(self, keys, out=None):
        """The server of each key, as int32 indices into ``nodes``."""
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t n = len(batch), i
        result = checked_output(out, _INT32, (n,), "out")
        cdef const uint64_t[::1] hv = _hashes(batch, n, self.algo, self.seed_value, "keys")
        cdef int32_t[::1] rv = result
        with nogil:
            for i in range(n):
                rv[i] = self.slots[_slot(hv[i], self.size)]
        return result

    @property
    def nodes(self):
        """Server names, in the program's server order."""
        return self._names

    def __len__(self):
        return len(self._names)

    def __contains__(self, name):
        return name in self._names

    def __iter__(self):
        return iter(self._names)


# --------------------------------------------------------------------------------------------------
# pymemcache's rendezvous: murmur3_32 of f"{node}-{key}" over code points masked to 8 bits

cdef inline void _mask_text(str text, uint8_t* out) noexcept:
    """Each code point of `text` cut to its low 8 bits, into out[0:len(text)]."""
    cdef Py_ssize_t i, n = len(text)
    cdef Py_UCS4 ch
    for i in range(n):
        ch = text[i]
        out[i] = <uint8_t>(<uint32_t>ch & 0xFF)


cdef str _format_key(object key, str argname):
    """The text pymemcache formats a key into: f"{key}", whatever the key (b"ab" -> "b'ab'",
    None -> "None"), except a memoryview, whose text is its address."""
    if isinstance(key, str):
        return <str>key
    if isinstance(key, memoryview):
        raise TypeError(f"{argname}: a memoryview key would be formatted as its address; pass "
                        f"bytes(key)")
    return format(key, "")


cdef class MurmurRendezvousBase:
    """pymemcache ``HashClient``'s placement: the highest murmur3_32(f"{node}-{key}") wins;
    equal scores go to the greater node name."""
    cdef readonly tuple _names
    cdef object _prefixes          # uint8, the masked "node-" texts back to back
    cdef object _starts            # int64[n + 1]
    cdef object _ranks             # int64[n]: order of the names as str
    cdef const uint8_t* prefixes
    cdef const int64_t* starts
    cdef const int64_t* ranks
    cdef Py_ssize_t count
    cdef Py_ssize_t longest

    def __init__(self, nodes):
        self._names = tuple(nodes)
        self.count = len(self._names)
        if not self.count:
            raise ValueError("servers: a rendezvous placement needs servers")
        texts = [f"{name}-" for name in self._names]
        starts = np.zeros(self.count + 1, dtype=np.int64)
        starts[1:] = np.cumsum([len(t) for t in texts])
        data = np.zeros(max(int(starts[self.count]), 1), dtype=np.uint8)
        cdef uint8_t[::1] dv = data
        cdef int64_t[::1] offsets = starts
        cdef Py_ssize_t k
        for k in range(self.count):
            _mask_text(texts[k], &dv[offsets[k]])
        order = sorted(range(self.count), key=lambda i: self._names[i])
        ranks = np.empty(self.count, dtype=np.int64)
        ranks[order] = np.arange(self.count)
        for arr in (data, starts, ranks):
            arr.flags.writeable = False
        self._prefixes, self._starts, self._ranks = data, starts, ranks
        cdef const uint8_t[::1] pv = data
        cdef const int64_t[::1] sv = starts
        cdef const int64_t[::1] rv = ranks
        self.prefixes, self.starts, self.ranks = &pv[0], &sv[0], &rv[0]
        self.longest = int(np.max(np.diff(starts)))

    cdef Py_ssize_t _best(self, const uint8_t* key, Py_ssize_t length,
                          uint8_t* scratch) noexcept nogil:
        cdef Py_ssize_t j, top = -1, plen
        cdef uint32_t score, best = 0
        memcpy(scratch + self.longest, key, length)
        for j in range(self.count):
            plen = self.starts[j + 1] - self.starts[j]
            # scratch holds the key right after its longest prefix: write this prefix just before
            memcpy(scratch + self.longest - plen, self.prefixes + self.starts[j], plen)
            score = murmur3_32(scratch + self.longest - plen, plen + length, 0)
            if top < 0 or score > best or (score == best and self.ranks[j] > self.ranks[top]):
                best = score
                top = j
        return top

    def get(self, key):
        """The server pymemcache's HashClient sends `key` to."""
        text = _format_key(key, "key")
        cdef Py_ssize_t length = len(text)
        cdef uint8_t small[256]
        cdef uint8_t* scratch = small
        if self.longest + length + 1 > 256:
            scratch = <uint8_t*>PyMem_Malloc(self.longest + length + 1)
            if scratch == NULL:
                raise MemoryError()
        try:
            _mask_text(text, scratch + self.longest)
            return self._names[self._best(scratch + self.longest, length, scratch)]
        finally:
            if scratch != small:
                PyMem_Free(scratch)

    def __getitem__(self, key):
        """``placement[key]`` is ``placement.get(key)``."""
        return self.get(key)

    def get_many(self, keys, out=None):
        """The server of each key, as int32 indices into ``nodes``."""
        batch = as_batch(keys, "keys")
        cdef Py_ssize_t n = len(batch), i
        result = checked_output(out, _INT32, (n,), "out")
        data, starts = _masked_texts(batch, n, "keys")
        cdef const uint8_t[::1] dv = data
        cdef const int64_t[::1] sv = starts
        cdef int32_t[::1] rv = result
        cdef Py_ssize_t widest = int(np.max(np.diff(starts))) if n else 0
        cdef uint8_t* scratch = <uint8_t*>PyMem_Malloc(self.longest + widest + 1)
        if scratch == NULL:
            raise MemoryError()
        try:
            with nogil:
                for i in range(n):
                    rv[i] = <int32_t>self._best(&dv[0] + sv[i], sv[i + 1] - sv[i], scratch)
        finally:
            PyMem_Free(scratch)
        return result

    @property
    def nodes(self):
        """Server names ("host:port"), in the order given (repeats once)."""
        return self._names

    def __len__(self):
        return self.count

    def __contains__(self, name):
        return name in self._names

    def __iter__(self):
        return iter(self._names)


cdef tuple _masked_texts(object batch, Py_ssize_t n, str argname):
    """Every key's text as pymemcache formats it, code points masked to 8 bits, back to back:
    (uint8 data, int64 starts[n + 1])."""
    cdef Py_ssize_t i, j, width, length
    cdef const uint32_t[:, ::1] ucs
    cdef uint8_t[::1] dv
    cdef int64_t[::1] sv
    if isinstance(batch, np.ndarray):
        kind = batch.dtype.kind
        if kind in "iub":
            batch = batch.astype("U")
            kind = "U"
        if kind == "U":
            width = batch.dtype.itemsize // 4
            source = checked_input(batch, np.dtype(f"=U{max(width, 1)}"), argname)
            starts = np.zeros(n + 1, dtype=np.int64)
            data = np.empty(max(n * width, 1), dtype=np.uint8)
            sv = starts
            dv = data
            if n and width:
                ucs = source.view(np.uint32).reshape(n, width)
                with nogil:
                    for i in range(n):
                        length = width
                        while length and ucs[i, length - 1] == 0:
                            length -= 1   # numpy drops trailing NULs from its str items
                        for j in range(length):
                            dv[sv[i] + j] = <uint8_t>(ucs[i, j] & 0xFF)
                        sv[i + 1] = sv[i] + length
            return data, starts
        if kind in "SO":
            batch = batch.tolist()
        else:
            raise TypeError(f"{argname} must hold str, bytes or int keys, got an array of "
                            f"dtype {batch.dtype}")
    elif not isinstance(batch, (list, tuple)):
        # pyarrow: integers through numpy, the rest item by item
        if batch.null_count:
            raise ValueError(f"{argname} holds nulls; null keys cannot be placed")
        kind = str(batch.type)
        if kind.startswith(("int", "uint", "bool")):
            return _masked_texts(batch.to_numpy(zero_copy_only=False), n, argname)
        batch = batch.to_pylist()
    texts = []
    for key in batch:
        if type(key) is str:
            texts.append(key)
        else:
            texts.append(_format_key(key, f"{argname}[{len(texts)}]"))
    starts = np.zeros(n + 1, dtype=np.int64)
    if n:
        starts[1:] = np.cumsum([len(t) for t in texts])
    data = np.empty(max(int(starts[n]), 1), dtype=np.uint8)
    dv = data
    sv = starts
    for i in range(n):
        _mask_text(texts[i], &dv[sv[i]])
    return data, starts
