# cython: freethreading_compatible = True
"""Weighted selection kernels: smooth weighted round robin, alias sampling, power of two choices
and hash affinity with bounded load.

A balancer's configuration (nodes, effective weights, who is eligible, the smooth sequence, the
alias table, the ring) is an immutable :class:`SelectConfig`; its moving state (the smooth cursor
or current weights, the random state, in-flight and failure counts) lives in :class:`Selector`
behind a C-level critical section, which is free where the GIL exists and keeps free-threaded
builds correct.
"""

from libc.math cimport ceil
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

cimport cython

from ringkit._hashing cimport as_batch, hash_batch
from ringkit._ring cimport RingState, ring_find

import os

import numpy as np

from ringkit.errors import NoAvailableNodeError, UnknownNodeError

cdef extern from *:
    """
    #define RK_GOLDEN 0x9E3779B97F4A7C15ULL
    #define RK_SM_1 0xBF58476D1CE4E5B9ULL
    #define RK_SM_2 0x94D049BB133111EBULL
    """
    const uint64_t GOLDEN "RK_GOLDEN"
    const uint64_t SM_1 "RK_SM_1"
    const uint64_t SM_2 "RK_SM_2"

# Strategies
cdef enum:
    SMOOTH = 0
    RANDOM = 1
    LEAST_REQUEST = 2
    RING = 3

STRATEGIES = ("smooth", "random", "least_request", "ring")

# A smooth sequence is laid out when building it costs at most this many steps (period x nodes);
# beyond, picks run the O(n) algorithm itself.
MAX_SMOOTH_WORK = 1 << 22


cdef inline uint64_t _mix(uint64_t z) noexcept nogil:
    """SplitMix64's output function (Steele, Lea and Flood, 2014)."""
    z = (z ^ (z >> 30)) * SM_1
    z = (z ^ (z >> 27)) * SM_2
    return z ^ (z >> 31)

cdef inline uint32_t _below(uint32_t bits, Py_ssize_t n) noexcept nogil:
    """Map 32 random bits onto [0, n) by multiply-shift (Lemire)."""
    return <uint32_t>((<uint64_t>bits * <uint64_t>n) >> 32)


# --------------------------------------------------------------------------------------------------
# The immutable configuration

@cython.final
cdef class SelectConfig:
    """One immutable balancer configuration. Built by :func:`make_config`."""
    cdef readonly tuple nodes
    cdef readonly dict positions
    cdef readonly int strategy
    cdef readonly object weights_array        # float64[n]: effective weights (0: not eligible)
    cdef readonly object eligible_array       # int32[k]: indices of eligible nodes, in order
    cdef readonly bint panic                  # no node was eligible: all of them are, in panic
    cdef readonly object sequence_array       # smooth: int32[period] or None
    cdef readonly object int_weights_array    # smooth: int64[n] integer weights
    cdef readonly object prob_array           # random: uint32[k] thresholds
    cdef readonly object alias_array          # random: int32[k] alias node indices
    cdef readonly object ring_map_array       # ring: int32[ring nodes] -> node index
    cdef readonly object shares_array         # ring: float64[n] weight shares of eligible nodes
    cdef readonly double load_factor
    cdef RingState ring
    cdef const double* weights
    cdef const int32_t* eligible
    cdef Py_ssize_t n_eligible
    cdef const int32_t* sequence
    cdef Py_ssize_t period
    cdef const int64_t* int_weights
    cdef const uint32_t* prob
    cdef const int32_t* alias
    cdef const int32_t* ring_map
    cdef const double* shares

    def __reduce__(self):
        raise TypeError("SelectConfig is internal")


cdef const void* _data(object arr):
    cdef const uint8_t[::1] view = arr.view(np.uint8).reshape(-1)
    return <const void*>&view[0] if view.shape[0] else NULL

cdef object _smooth_integer_weights(object weights, object eligible):
    """Integer weights for the smooth sequence: the weights themselves when integral, else the
    weights rounded to thousandths; divided by their gcd so the period is as short as it can be."""
    w = weights[eligible]
    top = float(w.max()) if w.shape[0] else 0.0
    if np.all(w == np.floor(w)) and top <= 2**40:
        ints = w.astype(np.int64)
    else:
        # Weights too large for thousandths are scaled so the largest is 2**40: the integer
        # weights, their total and the current weights must stay far from int64 overflow.
        scale = 1000.0 if top * 1000.0 <= 2**40 else 2.0**40 / top
        ints = np.maximum(1, np.rint(w * scale)).astype(np.int64)
    g = int(np.gcd.reduce(ints)) if ints.shape[0] else 1
    if g > 1:
        ints //= g
    out = np.zeros(weights.shape[0], dtype=np.int64)
    out[eligible] = ints
    return out

cdef Py_ssize_t _swrr_step(const int64_t* weights, int64_t* current, const int32_t* eligible,
                           Py_ssize_t n_eligible, int64_t total) noexcept nogil:
    """One pick of nginx's smooth weighted round robin: every eligible node's current weight
    grows by its weight, the largest (first on ties) is picked and loses the total."""
    cdef Py_ssize_t j, best = -1
    cdef int32_t node
    cdef int64_t best_value = 0
    for j in range(n_eligible):
        node = eligible[j]
        current[node] += weights[node]
        if best < 0 or current[node] > best_value:
            best = node
            best_value = current[node]
    current[best] -= total
    return best


def make_config(tuple nodes, object weights, object eligible_mask, str strategy,
                RingState ring=None, double load_factor=1.25, bint panic=False):
    """Build the immutable configuration (validated by the caller)."""
    cdef SelectConfig cfg = SelectConfig.__new__(SelectConfig)
    cdef Py_ssize_t n = len(nodes), k, i, steps, s
    cfg.nodes = nodes
    cfg.positions = {name: i for i, name in enumerate(nodes)}
    cfg.strategy = STRATEGIES.index(strategy)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    mask = np.ascontiguousarray(eligible_mask, dtype=bool) & (w > 0)
    cfg.panic = False
    if not mask.any():
        if not panic:
            cfg.panic = False
        else:
            mask = w > 0
            cfg.panic = True
    eligible = np.flatnonzero(mask).astype(np.int32)
    w = np.where(mask, w, 0.0)
    cfg.weights_array = w
    cfg.eligible_array = eligible
    cfg.n_eligible = eligible.shape[0]
    cfg.weights = <const double*>_data(w)
    cfg.eligible = <const int32_t*>_data(eligible)
    cfg.sequence_array = None
    cfg.period = 0
    cfg.load_factor = load_factor
    k = cfg.n_eligible
    cdef int64_t[::1] cur
    cdef int32_t[::1] seq
    cdef int64_t total
    if cfg.strategy == SMOOTH and k:
        ints = _smooth_integer_weights(w, eligible)
        cfg.int_weights_array = ints
        cfg.int_weights = <const int64_t*>_data(ints)
        total = int(ints.sum())
        if total * k <= MAX_SMOOTH_WORK:
            sequence = np.empty(total, dtype=np.int32)
            current = np.zeros(n, dtype=np.int64)
            cur = current
            seq = sequence
            with nogil:
                for s in range(total):
                    seq[s] = <int32_t>_swrr_step(cfg.int_weights, &cur[0], cfg.eligible, k, total)
            cfg.sequence_array = sequence
            cfg.sequence = <const int32_t*>_data(sequence)
            cfg.period = total
    elif cfg.strategy == RANDOM and k:
        prob, alias = _alias_table(w[eligible], eligible)
        cfg.prob_array = prob
        cfg.alias_array = alias
        cfg.prob = <const uint32_t*>_data(prob)
        cfg.alias = <const int32_t*>_data(alias)
    elif cfg.strategy == RING:
        if ring is None:
            raise TypeError("internal: the ring strategy needs a ring")
        cfg.ring = ring
        ring_map = np.array([cfg.positions[name] for name in ring.nodes], dtype=np.int32)
        cfg.ring_map_array = ring_map
        cfg.ring_map = <const int32_t*>_data(ring_map)
        shares = w / w.sum() if k else np.zeros(n)
        cfg.shares_array = shares
        cfg.shares = <const double*>_data(shares)
    for arr in (w, eligible, cfg.sequence_array, cfg.int_weights_array, cfg.prob_array,
                cfg.alias_array, cfg.ring_map_array, cfg.shares_array):
        if arr is not None:
            arr.flags.writeable = False
    return cfg


cdef tuple _alias_table(object weights, object eligible):
    """Vose's alias method: column j keeps itself with probability prob[j] / 2**32, else goes to
    alias[j]; both hold node indices."""
    cdef Py_ssize_t k = weights.shape[0], j
    scaled = (weights / weights.sum() * k).tolist()
    prob = [0.0] * k
    alias = list(range(k))
    small = [j for j in range(k) if scaled[j] < 1.0]
    large = [j for j in range(k) if scaled[j] >= 1.0]
    while small and large:
        s = small.pop()
        l = large[len(large) - 1]
        prob[s] = scaled[s]
        alias[s] = l
        scaled[l] = scaled[l] + scaled[s] - 1.0
        if scaled[l] < 1.0:
            large.pop()
            small.append(l)
    for j in large + small:   # leftovers are 1 up to rounding
        prob[j] = 1.0
    thresholds = np.array([min(int(p * 4294967296.0), 4294967295) if p < 1.0 else 4294967295
                           for p in prob], dtype=np.uint32)
    # A threshold of 2**32 - 1 still loses one draw in 2**32 to its alias, which is itself.
    nodes = np.asarray(eligible, dtype=np.int32)
    alias_nodes = nodes[np.array(alias, dtype=np.intp)] if k else nodes
    for j in range(k):
        if prob[j] >= 1.0:
            alias_nodes[j] = nodes[j]
    return thresholds, np.ascontiguousarray(alias_nodes, dtype=np.int32)


# --------------------------------------------------------------------------------------------------
# The moving state

cdef class Selector:
    """The compiled core of :class:`ringkit.Balancer`: picks, leases and outcome counting."""
    cdef SelectConfig _config
    cdef Py_ssize_t cursor
    cdef object current_array        # smooth without a laid-out sequence: int64[n]
    cdef int64_t* current
    cdef uint64_t rng
    cdef object inflight_array       # int64[n]
    cdef int64_t* inflight
    cdef int64_t total_inflight
    cdef object failures_array       # int32[n]: consecutive failures
    cdef int32_t* failures
    cdef public int max_failures
    cdef bint pending
    cdef double deadline
    cdef readonly object clock

    def _init_selector(self, SelectConfig config not None, seed, clock, int max_failures):
        if seed is None:
            self.rng = int.from_bytes(os.urandom(8), "little")
        else:
            # int(): a numpy integer seed would try to mask with an int64 and overflow.
            self.rng = _mix(<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF))
        self.clock = clock
        self.max_failures = max_failures
        self.pending = False
        self.deadline = 0.0
        self.cursor = 0
        self.total_inflight = 0
        n = len(config.nodes)
        self._set_arrays(config, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32),
                         np.zeros(n, dtype=np.int64))
        self._config = config

    cdef _set_arrays(self, SelectConfig config, object inflight, object failures, object current):
        cdef int64_t[::1] iv = inflight
        cdef int32_t[::1] fv = failures
        cdef int64_t[::1] cv = current
        self.inflight_array = inflight
        self.failures_array = failures
        self.current_array = current
        self.inflight = &iv[0] if iv.shape[0] else NULL
        self.failures = &fv[0] if fv.shape[0] else NULL
        self.current = &cv[0] if cv.shape[0] else NULL

    def _install(self, SelectConfig config not None):
        """Swap in a new configuration, carrying counts over by node name and the smooth position
        over proportionally, so the sequence goes on without a burst to a changed node.

        Everything that allocates or may run Python code happens before the critical section:
        where the GIL exists the section is a no-op, and a lease entering or exiting on another
        thread in the middle of the copy would be lost.
        """
        cdef SelectConfig old
        cdef Py_ssize_t i, j, n = len(config.nodes), n_old
        cdef int64_t total
        cdef bint stale = True
        inflight = np.zeros(max(n, 1), dtype=np.int64)
        failures = np.zeros(max(n, 1), dtype=np.int32)
        current = np.zeros(max(n, 1), dtype=np.int64)
        cdef int64_t[::1] iv = inflight
        cdef int32_t[::1] fv = failures
        cdef int64_t[::1] cv = current
        cdef const int32_t[::1] rv
        inflight_view, failures_view, current_view = inflight[:n], failures[:n], current[:n]
        while stale:
            with cython.critical_section(self):
                old = self._config
            remap = np.array([config.positions.get(name, -1) for name in old.nodes] or [-1],
                             dtype=np.int32)
            rv = remap
            n_old = len(old.nodes)
            with cython.critical_section(self):
                stale = old is not self._config
                if not stale:
                    total = 0
                    for i in range(n_old):
                        j = rv[i]
                        if j >= 0:
                            iv[j] = self.inflight[i]
                            fv[j] = self.failures[i]
                            cv[j] = self.current[i]
                            total += self.inflight[i]
                    self.total_inflight = total
                    self.inflight = &iv[0]
                    self.failures = &fv[0]
                    self.current = &cv[0]
                    self.inflight_array = inflight_view
                    self.failures_array = failures_view
                    self.current_array = current_view
                    if config.period and old.period:
                        self.cursor = (self.cursor * config.period) // old.period
                    elif config.period:
                        self.cursor = 0
                    self._config = config

    @property
    def _select_config(self):
        with cython.critical_section(self):
            return self._config

    def _set_deadline(self, deadline):
        """Ask to be called back (``_on_deadline``) at the first pick at or after `deadline`."""
        with cython.critical_section(self):
            if deadline is None:
                self.pending = False
            else:
                self.pending = True
                self.deadline = deadline

    cdef int _tick(self) except -1:
        if self.pending:
            now = self.clock()
            if now >= self.deadline:
                self.pending = False
                self._on_deadline(now)
        return 0

    # -- one pick ---------------------------------------------------------------------------------

    cdef uint64_t _draw(self) noexcept:
        self.rng += GOLDEN
        return _mix(self.rng)

    cdef Py_ssize_t _pick_locked(self, SelectConfig cfg, uint64_t h, bint has_key,
                                 const uint8_t* excluded) except -2:
        """One pick under the critical section; -1 when no node can be picked."""
        cdef Py_ssize_t k = cfg.n_eligible, j, a, b
        cdef uint64_t d
        cdef int32_t node
        if k == 0:
            return -1
        if cfg.strategy == SMOOTH:
            if excluded != NULL:
                return self._smooth_excluding(cfg, excluded)
            if cfg.period:
                node = cfg.sequence[self.cursor]
                self.cursor += 1
                if self.cursor == cfg.period:
                    self.cursor = 0
                return node
            return _swrr_step(cfg.int_weights, self.current, cfg.eligible, k,
                              _total(cfg.int_weights, cfg.eligible, k))
        if cfg.strategy == RANDOM:
            d = self._draw()
            if excluded == NULL:
                return _alias_pick(cfg, d)
            for j in range(16):
                node = _alias_pick(cfg, d)
                if not excluded[node]:
                    return node
                d = self._draw()
            return _weighted_allowed(cfg, excluded, d)
        if cfg.strategy == LEAST_REQUEST:
            d = self._draw()
            return _p2c(cfg, self.inflight, d, excluded)
        # RING
        return _ring_pick(cfg, self.inflight, self.total_inflight, h, excluded)

    cdef Py_ssize_t _smooth_excluding(self, SelectConfig cfg, const uint8_t* excluded) except -2:
        cdef Py_ssize_t step, pos, node
        if cfg.period:
            for step in range(cfg.period):
                pos = (self.cursor + step) % cfg.period
                node = cfg.sequence[pos]
                if not excluded[node]:
                    self.cursor = (self.cursor + 1) % cfg.period
                    return node
            return -1
        # Without a laid-out sequence: run the algorithm over the allowed nodes only.
        allowed = np.array([cfg.eligible[j] for j in range(cfg.n_eligible)
                            if not excluded[cfg.eligible[j]]], dtype=np.int32)
        if allowed.shape[0] == 0:
            return -1
        cdef const int32_t[::1] av = allowed
        return _swrr_step(cfg.int_weights, self.current, &av[0], av.shape[0],
                          _total(cfg.int_weights, &av[0], av.shape[0]))

    cdef uint64_t _key_hash(self, SelectConfig cfg, object key) except? 0xFFFFFFFFFFFFFFFF:
        if cfg.strategy != RING:
            return 0
        if key is None:
            raise ValueError("key is required with strategy='ring'")
        return cfg.ring.key_hash(key, "key")

    cdef object _excluded_mask(self, SelectConfig cfg, object exclude):
        if exclude is None:
            return None
        if isinstance(exclude, str):
            exclude = (exclude,)
        mask = np.zeros(max(len(cfg.nodes), 1), dtype=np.uint8)
        for name in exclude:
            j = cfg.positions.get(name)
            if j is None:
                if not isinstance(name, str):
                    raise TypeError(f"exclude must hold node names (str), got "
                                    f"{type(name).__name__}")
                raise UnknownNodeError(name, f"exclude: unknown node {name!r}")
            mask[j] = 1
        return mask

    cdef SelectConfig _pick(self, object key, object exclude, Py_ssize_t* picked):
        cdef SelectConfig cfg
        cdef Py_ssize_t node = -1
        cdef uint64_t h
        cdef const uint8_t[::1] mv
        cdef const uint8_t* excluded = NULL
        cdef bint stale = True
        self._tick()
        while stale:
            with cython.critical_section(self):
                cfg = self._config
            # Hashing the key and reading `exclude` may run Python code: outside the section.
            h = self._key_hash(cfg, key)
            mask = self._excluded_mask(cfg, exclude)
            if mask is not None:
                mv = mask
                excluded = &mv[0]
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale:
                    node = self._pick_locked(cfg, h, True, excluded)
        if node < 0:
            if not cfg.nodes:
                raise NoAvailableNodeError("the balancer has no nodes")
            if excluded != NULL and cfg.n_eligible:
                raise NoAvailableNodeError("every available node is excluded")
            raise NoAvailableNodeError(
                "every node is ejected or marked down (when_all_down='raise')")
        picked[0] = node
        return cfg

    def pick(self, key=None, exclude=None):
        """Pick a node; see :class:`ringkit.Balancer`."""
        cdef Py_ssize_t node
        cdef SelectConfig cfg = self._pick(key, exclude, &node)
        return cfg.nodes[node]

    def pick_many(self, n_or_keys, out=None):
        """Pick many nodes at once: int32 indices into ``nodes``; equal to a loop of ``pick``."""
        cdef SelectConfig cfg
        cdef Py_ssize_t n, i
        cdef uint64_t start
        cdef int32_t[::1] rv
        cdef uint64_t[::1] hv
        cdef const int64_t[::1] counts
        cdef const int64_t* inflight = NULL
        cdef int64_t m
        self._tick()
        cfg = self._select_config
        if cfg.strategy == RING:
            if isinstance(n_or_keys, (int, np.integer)) and not isinstance(n_or_keys, bool):
                raise TypeError("strategy='ring' picks by key: pass the keys, not a count")
            batch = as_batch(n_or_keys, "keys")
            n = len(batch)
            hashes = np.empty(n + 1, dtype=np.uint64)
            hv = hashes
            if n:
                hash_batch(batch, cfg.ring.algo, cfg.ring.seed_value, &hv[0], n, "keys")
                if cfg.ring.ketama:
                    hashes <<= np.uint64(32)
        else:
            if isinstance(n_or_keys, bool) or not isinstance(n_or_keys, (int, np.integer)):
                raise TypeError(f"n must be an int (strategy={STRATEGIES[cfg.strategy]!r} picks "
                                f"without keys), got {type(n_or_keys).__name__}")
            if n_or_keys < 0:
                raise ValueError(f"n must be >= 0, got {n_or_keys}")
            n = n_or_keys
        result = _check_out(out, n)
        if n == 0:
            return result
        rv = result
        cdef Py_ssize_t bad = 0
        with cython.critical_section(self):
            cfg = self._config
            if cfg.n_eligible == 0:
                bad = 1
            elif cfg.strategy == SMOOTH and cfg.period:
                start = self.cursor
                self.cursor = (self.cursor + n) % cfg.period
                with nogil:
                    _smooth_fill(cfg, <Py_ssize_t>start, n, &rv[0])
            elif cfg.strategy == RANDOM or cfg.strategy == LEAST_REQUEST:
                # Every pick takes one draw: advance the shared state past the batch now, and
                # draw the batch from a private copy without the GIL.
                start = self.rng
                self.rng += <uint64_t>n * GOLDEN
                # Releasing the GIL suspends the section, and a change in another thread frees
                # the shared in-flight array: P2C reads a private copy of the counts.
                if cfg.strategy == LEAST_REQUEST:
                    counts = self.inflight_array.copy()
                    inflight = &counts[0]
                with nogil:
                    _random_fill(cfg, inflight, start, n, &rv[0])
            elif cfg.strategy == RING:
                counts = self.inflight_array.copy()
                m = self.total_inflight
                with nogil:
                    for i in range(n):
                        rv[i] = <int32_t>_ring_pick(cfg, &counts[0], m, hv[i], NULL)
            else:
                for i in range(n):
                    rv[i] = <int32_t>self._pick_locked(cfg, 0, False, NULL)
        if bad:
            raise NoAvailableNodeError("every node is ejected or marked down "
                                       "(when_all_down='raise')")
        return result

    # -- leases and outcomes ---------------------------------------------------------------------

    def lease(self, key=None):
        """A context manager that picks a node, counts it in flight and reports the outcome."""
        cdef Lease lease = Lease.__new__(Lease)
        lease.owner = self
        lease.key = key
        lease.index = -1
        return lease

    cdef int _begin(self, Lease lease) except -1:
        cdef Py_ssize_t node
        cdef SelectConfig cfg = self._pick(lease.key, None, &node)
        lease.node = cfg.nodes[node]
        with cython.critical_section(self):
            if cfg is not self._config:
                # Swapped meanwhile: count it under the new configuration, by name.
                cfg = self._config
                node = cfg.positions.get(lease.node, -1)
            if node >= 0:
                self.inflight[node] += 1
                self.total_inflight += 1
            lease.config = cfg
        lease.index = node
        return 0

    cdef int _finish(self, Lease lease, bint ok) except -1:
        cdef Py_ssize_t i = lease.index
        cdef bint tripped = False
        cdef int32_t count = 0
        with cython.critical_section(self):
            if lease.config is not self._config:
                i = self._config.positions.get(lease.node, -1)
            if i >= 0:
                if self.inflight[i] > 0:
                    self.inflight[i] -= 1
                    self.total_inflight -= 1
                tripped = self._outcome(i, ok)
                count = self.failures[i]
        if tripped:
            self._on_failures(lease.node, count)
        return 0

    cdef bint _outcome(self, Py_ssize_t i, bint ok) noexcept:
        """Count an outcome; true when consecutive failures reach max_failures (call the hook)."""
        if ok:
            self.failures[i] = 0
            return False
        self.failures[i] += 1
        return self.failures[i] >= self.max_failures

    def report(self, node, ok):
        """Report the outcome of a request to `node` made without a lease."""
        cdef Py_ssize_t i
        cdef bint tripped
        cdef int32_t count
        cdef bint good = bool(ok)
        with cython.critical_section(self):
            i = self._config.positions.get(node, -1)
            if i >= 0:
                tripped = self._outcome(i, good)
                count = self.failures[i]
        if i < 0:
            if not isinstance(node, str):
                raise TypeError(f"node must be a str node name, got {type(node).__name__}")
            raise UnknownNodeError(node, f"node: unknown node {node!r}")
        if tripped:
            self._on_failures(node, count)

    def _failure_counts(self):
        """Consecutive failures of each node of the current configuration."""
        with cython.critical_section(self):
            return dict(zip(self._config.nodes, self.failures_array.tolist()))

    def _reset_failures(self, node):
        with cython.critical_section(self):
            i = self._config.positions.get(node, -1)
            if i >= 0:
                self.failures[i] = 0

    @property
    def in_flight(self):
        """{node: requests in flight} (leases entered and not yet exited)."""
        with cython.critical_section(self):
            return dict(zip(self._config.nodes, self.inflight_array.tolist()))

    def _on_deadline(self, now):
        pass

    def _on_failures(self, node, count):
        pass


cdef inline int64_t _total(const int64_t* weights, const int32_t* eligible,
                           Py_ssize_t k) noexcept nogil:
    cdef int64_t total = 0
    cdef Py_ssize_t j
    for j in range(k):
        total += weights[eligible[j]]
    return total

cdef inline Py_ssize_t _alias_pick(SelectConfig cfg, uint64_t d) noexcept nogil:
    cdef uint32_t column = _below(<uint32_t>(d >> 32), cfg.n_eligible)
    cdef int32_t keep = cfg.eligible[column]
    cdef int32_t other = cfg.alias[column]
    # Select without a branch: the coin is random, so a branch would mispredict half the time
    # (measured: 6 ns a pick with the branch, under 2 ns without, in pick_many).
    cdef int32_t mask = -(<int32_t>(<uint32_t>d < cfg.prob[column]))
    return other ^ ((keep ^ other) & mask)

cdef Py_ssize_t _weighted_allowed(SelectConfig cfg, const uint8_t* excluded,
                                  uint64_t d) noexcept nogil:
    """A weighted draw among the allowed eligible nodes, in O(k): for when the alias table keeps
    landing on excluded ones, so that a retry still goes to the rest in proportion to weight."""
    cdef Py_ssize_t j, node, last = -1
    cdef double total = 0.0, target
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if not excluded[node]:
            total += cfg.weights[node]
            last = node
    if last < 0:
        return -1
    target = <double>(d >> 11) * (1.0 / 9007199254740992.0) * total
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if not excluded[node]:
            target -= cfg.weights[node]
            if target < 0.0:
                return node
    return last

cdef inline Py_ssize_t _p2c(SelectConfig cfg, const int64_t* inflight, uint64_t d,
                            const uint8_t* excluded) noexcept nogil:
    """Power of two choices: two distinct random eligible nodes; the one with fewer requests in
    flight per unit of weight wins (the first on ties)."""
    cdef Py_ssize_t k = cfg.n_eligible, a, b, na, nb
    if excluded != NULL:
        return _p2c_excluding(cfg, inflight, d, excluded)
    if k == 1:
        return cfg.eligible[0]
    a = _below(<uint32_t>(d >> 32), k)
    b = _below(<uint32_t>d, k - 1)
    if b >= a:
        b += 1
    na = cfg.eligible[a]
    nb = cfg.eligible[b]
    # inflight[na] / w[na] <= inflight[nb] / w[nb], without dividing
    if inflight[na] * cfg.weights[nb] <= inflight[nb] * cfg.weights[na]:
        return na
    return nb

cdef Py_ssize_t _p2c_excluding(SelectConfig cfg, const int64_t* inflight, uint64_t d,
                               const uint8_t* excluded) noexcept nogil:
    cdef Py_ssize_t k = 0, j, a, b, na, nb
    cdef int32_t* allowed = <int32_t*>malloc(cfg.n_eligible * sizeof(int32_t))
    if allowed == NULL:
        return -1
    for j in range(cfg.n_eligible):
        if not excluded[cfg.eligible[j]]:
            allowed[k] = cfg.eligible[j]
            k += 1
    if k == 0:
        free(allowed)
        return -1
    if k == 1:
        na = allowed[0]
        free(allowed)
        return na
    a = _below(<uint32_t>(d >> 32), k)
    b = _below(<uint32_t>d, k - 1)
    if b >= a:
        b += 1
    na = allowed[a]
    nb = allowed[b]
    free(allowed)
    if inflight[na] * cfg.weights[nb] <= inflight[nb] * cfg.weights[na]:
        return na
    return nb

cdef Py_ssize_t _ring_pick(SelectConfig cfg, const int64_t* inflight, int64_t total_inflight,
                           uint64_t h, const uint8_t* excluded) noexcept nogil:
    """Hash affinity with bounded load: walk clockwise from the key's point to the first eligible
    node whose in-flight count is below ceil(load_factor * (m + 1) * its share)."""
    cdef Py_ssize_t npoints = cfg.ring.npoints, p, steps, node, fallback = -1
    # The product is often an integer on paper (1.1 x 52 x 5/26 = 11) and a few ulps above it in
    # floating point, where ceil would let a node take one more: take the room a hair lower.
    cdef double room = cfg.load_factor * (total_inflight + 1) * (1.0 - 1e-12)
    if npoints == 0:
        return -1
    p = ring_find(cfg.ring, h)
    for steps in range(npoints):
        node = cfg.ring_map[cfg.ring.owners[p]]
        if cfg.shares[node] > 0 and (excluded == NULL or not excluded[node]):
            if fallback < 0:
                fallback = node
            # Compared as doubles: a huge load_factor gives a cap beyond int64 (a cast is UB).
            if inflight[node] < ceil(room * cfg.shares[node]):
                return node
        p += 1
        if p == npoints:
            p = 0
    return fallback

cdef void _smooth_fill(SelectConfig cfg, Py_ssize_t start, Py_ssize_t n,
                       int32_t* out) noexcept nogil:
    cdef Py_ssize_t i, pos = start
    for i in range(n):
        out[i] = cfg.sequence[pos]
        pos += 1
        if pos == cfg.period:
            pos = 0

cdef void _random_fill(SelectConfig cfg, const int64_t* inflight, uint64_t state, Py_ssize_t n,
                       int32_t* out) noexcept nogil:
    cdef Py_ssize_t i
    if cfg.strategy == RANDOM:
        for i in range(n):
            state += GOLDEN
            out[i] = <int32_t>_alias_pick(cfg, _mix(state))
    else:
        for i in range(n):
            state += GOLDEN
            out[i] = <int32_t>_p2c(cfg, inflight, _mix(state), NULL)

cdef object _check_out(object out, Py_ssize_t n):
    if out is None:
        return np.empty(n, dtype=np.int32)
    if not isinstance(out, np.ndarray) or out.dtype != np.int32:
        raise TypeError("out must be a numpy int32 array")
    if out.shape != (n,) or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writeable C-contiguous int32 array of length {n}")
    return out


@cython.final
cdef class Lease:
    """``with balancer.lease(key) as node:`` counts the request in flight while the block runs
    and reports its outcome: leaving by an exception counts as a failure."""
    cdef Selector owner
    cdef SelectConfig config
    cdef object key
    cdef Py_ssize_t index
    cdef readonly object node

    def __enter__(self):
        if self.config is not None or self.node is not None:
            raise RuntimeError("a lease is entered once")
        self.owner._begin(self)
        return self.node

    def __exit__(self, exc_type, exc, tb):
        if self.config is not None:
            self.owner._finish(self, exc_type is None)
            self.config = None
        return False
