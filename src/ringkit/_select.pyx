# cython: freethreading_compatible = True
"""Weighted selection kernels: smooth weighted round robin, alias sampling, power of two choices
and hash affinity with bounded load.

A balancer's configuration (nodes, effective weights, who is eligible, the smooth sequence, the
alias table, the ring) is an immutable :class:`SelectConfig`; its moving state (the smooth cursor
or current weights, the random state, in-flight and failure counts) lives in :class:`Selector`
behind a C-level critical section, which is free where the GIL exists and keeps free-threaded
builds correct.

Rule of the critical sections here: inside one, only C runs (no Python call, no allocation, no
attribute lookup). Whatever needs Python (hashing a key, reading `exclude`, a buffer to copy
counts into, a name lookup) happens before, against the configuration read in a first short
section; the second section checks that the configuration is still the same one and otherwise
the work is redone against the new one.

One weight model for every strategy: a node's share of the picks is its weight over the total of
the eligible weights, exactly, whatever the scale of the weights (1e-300 beside 1 is picked about
never, not once in a thousand); weight 0 is never picked.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cimport cython

from ringkit._arrays cimport checked_input, checked_output
from ringkit._hashing cimport as_batch
from ringkit._ring cimport RingState, bounded_walk, ring_find

import math
import os

import numpy as np

from ringkit.errors import NoAvailableNodeError, UnknownNodeError

cdef extern from *:
    """
    #define RK_GOLDEN 0x9E3779B97F4A7C15ULL
    #define RK_SM_1 0xBF58476D1CE4E5B9ULL
    #define RK_SM_2 0x94D049BB133111EBULL
    #define RK_SALT 0xD1B54A32D192ED03ULL
    """
    const uint64_t GOLDEN "RK_GOLDEN"
    const uint64_t SM_1 "RK_SM_1"
    const uint64_t SM_2 "RK_SM_2"
    const uint64_t SALT "RK_SALT"

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

# Integer smooth weights stay at most this large (and their total below 2**62), so that current
# weights, which stay within (-total, total), never come near int64 overflow.
cdef int64_t _MAX_INT_WEIGHT = 1 << 40

cdef object _FLOAT64 = np.dtype(np.float64)
cdef object _BOOL = np.dtype(np.bool_)
cdef object _INT32 = np.dtype(np.int32)


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
    cdef readonly object int_weights_array    # smooth: int64[n] integer weights, or None
    cdef readonly object prob_array           # random, least_request: uint32[k] thresholds
    cdef readonly object alias_array          # random, least_request: int32[k] alias nodes
    cdef readonly object ring_map_array       # ring: int32[ring nodes] -> node index
    cdef readonly object shares_array         # ring: float64[n] weight shares of eligible nodes
    cdef readonly double load_factor
    cdef RingState ring
    cdef object scaled_array                  # float64[n]: the weights the kernels read
    cdef const double* weights                # ... scaled by a power of two into [0.5, 1]
    cdef const int32_t* eligible
    cdef Py_ssize_t n_eligible
    cdef const int32_t* sequence
    cdef Py_ssize_t period
    cdef const int64_t* int_weights           # smooth, integer weights: NULL on the float path
    cdef int64_t int_total
    cdef double float_total                   # smooth, float path: the eligible weights' sum
    cdef double unit                          # smooth: the weight of one integer unit
    cdef const uint32_t* prob
    cdef const int32_t* alias
    cdef const int32_t* ring_map
    cdef const double* shares
    cdef bint off_ring                        # ring: an eligible node has no point on the ring
    cdef bint uniform                         # every eligible node has the same weight

    def __reduce__(self):
        raise TypeError("SelectConfig is internal")


cdef const void* _data(object arr):
    cdef const uint8_t[::1] view = arr.view(np.uint8).reshape(-1)
    return <const void*>&view[0] if view.shape[0] else NULL

cdef tuple _smooth_integer_weights(list weights):
    """nginx's algorithm on integers, when the weights are integers in disguise: each weight is a
    dyadic fraction (num / 2**e, as every float is), so over a common power of two they are exact
    integers; divided by their gcd, the period is as short as it can be. Where they are small
    enough, the integer algorithm is exactly the float one (every sum exact) and can be laid out;
    else (None, 0.0): the floats are used as they are."""
    ratios = [w.as_integer_ratio() for w in weights]
    common = max(den for _, den in ratios)
    ints = [num * (common // den) for num, den in ratios]
    g = math.gcd(*ints)
    if g > 1:
        ints = [i // g for i in ints]
    if max(ints) > _MAX_INT_WEIGHT or sum(ints) >= 2**62:
        return None, 0.0
    return ints, g / common

cdef inline Py_ssize_t _swrr_step_int(const int64_t* weights, int64_t* current,
                                      const int32_t* eligible, Py_ssize_t k,
                                      int64_t total) noexcept nogil:
    """One pick of nginx's smooth weighted round robin: every eligible node's current weight
    grows by its weight, the largest (first on ties) is picked and loses the total."""
    cdef Py_ssize_t j, best = -1
    cdef int32_t node
    cdef int64_t best_value = 0
    for j in range(k):
        node = eligible[j]
        current[node] += weights[node]
        if best < 0 or current[node] > best_value:
            best = node
            best_value = current[node]
    current[best] -= total
    return best

cdef inline Py_ssize_t _swrr_step_float(const double* weights, double* current,
                                        const int32_t* eligible, Py_ssize_t k,
                                        double total) noexcept nogil:
    """The same step in floating point, as nginx's algorithm reads with real weights: the same
    additions in the same order, so the sequence is deterministic, and each node's current weight
    stays within (-total, total), so over any run of picks a node's count is within a pick or so
    of its share."""
    cdef Py_ssize_t j, best = -1
    cdef int32_t node
    cdef double best_value = 0.0
    for j in range(k):
        node = eligible[j]
        current[node] += weights[node]
        if best < 0 or current[node] > best_value:
            best = node
            best_value = current[node]
    current[best] -= total
    return best

cdef Py_ssize_t _swrr_step_excluding(SelectConfig cfg, int64_t* current, double* fcurrent,
                                     const uint8_t* excluded) noexcept nogil:
    """A step among the eligible nodes that are not excluded; as nginx skips the peers it has
    tried, they neither grow nor count in the total. -1 when every one is excluded."""
    cdef Py_ssize_t j, best = -1
    cdef int32_t node
    cdef int64_t total = 0, best_value = 0
    cdef double ftotal = 0.0, fbest = 0.0
    if cfg.int_weights != NULL:
        for j in range(cfg.n_eligible):
            node = cfg.eligible[j]
            if excluded[node]:
                continue
            current[node] += cfg.int_weights[node]
            total += cfg.int_weights[node]
            if best < 0 or current[node] > best_value:
                best = node
                best_value = current[node]
        if best >= 0:
            current[best] -= total
        return best
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if excluded[node]:
            continue
        fcurrent[node] += cfg.weights[node]
        ftotal += cfg.weights[node]
        if best < 0 or fcurrent[node] > fbest:
            best = node
            fbest = fcurrent[node]
    if best >= 0:
        fcurrent[best] -= ftotal
    return best


def make_config(tuple nodes, object weights, object eligible_mask, str strategy,
                RingState ring=None, double load_factor=1.25, bint panic=False) -> SelectConfig:
    """Build the immutable configuration (validated by the caller: ringkit.balancer)."""
    cdef SelectConfig cfg = SelectConfig.__new__(SelectConfig)
    cdef Py_ssize_t n = len(nodes), k, s
    cfg.nodes = nodes
    cfg.positions = {name: i for i, name in enumerate(nodes)}
    cfg.strategy = STRATEGIES.index(strategy)
    w = checked_input(np.asarray(weights, dtype=np.float64), _FLOAT64, "weights")
    mask = checked_input(np.asarray(eligible_mask, dtype=bool), _BOOL, "eligible_mask") & (w > 0)
    cfg.panic = False
    if not mask.any() and panic:
        mask = w > 0
        cfg.panic = True
    eligible = np.flatnonzero(mask).astype(np.int32)
    w = np.where(mask, w, 0.0)
    cfg.weights_array = w
    cfg.eligible_array = eligible
    cfg.n_eligible = eligible.shape[0]
    k = cfg.n_eligible
    # Every strategy is scale-free, and scaling by a power of two is exact: the kernels read the
    # weights scaled so the largest eligible one is in [0.5, 1), where no sum of weights, no
    # current weight and no in-flight count times a weight can overflow (weights of 1e308 work
    # as weights of 1 do). A weight below 2**-1074 of the largest becomes 0: never picked.
    top = float(w.max()) if k else 0.0
    scaled = np.ldexp(w, -math.frexp(top)[1]) if top > 0 else w.copy()
    cfg.scaled_array = scaled
    cfg.weights = <const double*>_data(scaled)
    cfg.uniform = k > 0 and bool((scaled[eligible] == scaled[eligible[0]]).all())
    cfg.eligible = <const int32_t*>_data(eligible)
    cfg.sequence_array = None
    cfg.int_weights_array = None
    cfg.period = 0
    cfg.unit = 1.0
    cfg.load_factor = load_factor
    cdef int64_t[::1] cur
    cdef int32_t[::1] seq
    cdef int64_t total
    if cfg.strategy == SMOOTH and k:
        # The float path's total: the eligible weights added in node order, as nginx does.
        cfg.float_total = 0.0
        for value in scaled[eligible].tolist():
            cfg.float_total += value
        ints, unit = _smooth_integer_weights(w[eligible].tolist())
        if ints is not None:
            int_weights = np.zeros(n, dtype=np.int64)
            int_weights[eligible] = ints
            cfg.int_weights_array = int_weights
            cfg.int_weights = <const int64_t*>_data(int_weights)
            cfg.unit = unit
            total = sum(ints)
            cfg.int_total = total
            if total * k <= MAX_SMOOTH_WORK:
                sequence = np.empty(total, dtype=np.int32)
                current = np.zeros(n, dtype=np.int64)
                cur = current
                seq = sequence
                with nogil:
                    for s in range(total):
                        seq[s] = <int32_t>_swrr_step_int(cfg.int_weights, &cur[0], cfg.eligible,
                                                         k, total)
                cfg.sequence_array = sequence
                cfg.sequence = <const int32_t*>_data(sequence)
                cfg.period = total
    elif (cfg.strategy == RANDOM or cfg.strategy == LEAST_REQUEST) and k:
        prob, alias = _alias_table(scaled[eligible], eligible)
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
        on_ring = np.zeros(n, dtype=bool)
        on_ring[ring_map] = True
        cfg.off_ring = bool((mask & ~on_ring).any())
        shares = scaled / scaled.sum() if k else np.zeros(n)
        cfg.shares_array = shares
        cfg.shares = <const double*>_data(shares)
    for arr in (w, scaled, eligible, cfg.sequence_array, cfg.int_weights_array, cfg.prob_array,
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
    cdef object current_array        # smooth, integer weights without a sequence: int64[n]
    cdef int64_t* current
    cdef object fcurrent_array       # smooth, float weights: float64[n]
    cdef double* fcurrent
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

    def _init_selector(self, SelectConfig config not None, seed: int | None,
                       clock: Callable[[], float], int max_failures) -> None:
        """Start from `config` with nothing in flight; `seed` (None: from the OS) seeds the
        random strategies."""
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
        n = max(len(config.nodes), 1)
        self._set_arrays(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int32),
                         np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64))
        self._config = config

    cdef _set_arrays(self, object inflight, object failures, object current, object fcurrent):
        cdef int64_t[::1] iv = inflight
        cdef int32_t[::1] fv = failures
        cdef int64_t[::1] cv = current
        cdef double[::1] dv = fcurrent
        self.inflight_array = inflight
        self.failures_array = failures
        self.current_array = current
        self.fcurrent_array = fcurrent
        self.inflight = &iv[0]
        self.failures = &fv[0]
        self.current = &cv[0]
        self.fcurrent = &dv[0]

    def _install(self, SelectConfig config not None) -> None:
        """Swap in a new configuration, carrying counts over by node name and the smooth position
        over proportionally, so the sequence goes on without a burst to a changed node.

        Everything that allocates or may run Python code happens before the critical section:
        where the GIL exists the section is a no-op, and a lease entering or exiting on another
        thread in the middle of the copy would be lost.
        """
        cdef SelectConfig old
        cdef Py_ssize_t i, j, n = len(config.nodes), n_old
        cdef int64_t total
        cdef double real
        cdef bint stale = True, same_units
        if config.strategy != self._select_config.strategy:
            raise ValueError("internal: a balancer keeps its strategy")
        inflight = np.zeros(max(n, 1), dtype=np.int64)
        failures = np.zeros(max(n, 1), dtype=np.int32)
        current = np.zeros(max(n, 1), dtype=np.int64)
        fcurrent = np.zeros(max(n, 1), dtype=np.float64)
        cdef int64_t[::1] iv = inflight
        cdef int32_t[::1] fv = failures
        cdef int64_t[::1] cv = current
        cdef double[::1] dv = fcurrent
        cdef const int32_t[::1] rv
        inflight_view, failures_view = inflight[:n], failures[:n]
        current_view, fcurrent_view = current[:n], fcurrent[:n]
        # The old arrays are held by locals (old_*) until the method returns: they are freed
        # after the section, never inside it.
        old_inflight = old_failures = old_current = old_fcurrent = None
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
                    # Current weights carry over in units of weight: an integer unit may change.
                    same_units = ((old.int_weights == NULL) == (config.int_weights == NULL)
                                  and old.unit == config.unit)
                    total = 0
                    for i in range(n_old):
                        j = rv[i]
                        if j >= 0:
                            iv[j] = self.inflight[i]
                            fv[j] = self.failures[i]
                            total += self.inflight[i]
                            if same_units:
                                cv[j] = self.current[i]
                                dv[j] = self.fcurrent[i]
                            else:
                                real = (self.fcurrent[i] if old.int_weights == NULL
                                        else self.current[i] * old.unit)
                                if config.int_weights == NULL:
                                    dv[j] = real
                                else:
                                    real = real / config.unit
                                    if not -4e18 < real < 4e18:
                                        real = 0.0
                                    cv[j] = <int64_t>(real + 0.5 if real >= 0 else real - 0.5)
                    self.total_inflight = total
                    old_inflight, old_failures = self.inflight_array, self.failures_array
                    old_current, old_fcurrent = self.current_array, self.fcurrent_array
                    self.inflight = &iv[0]
                    self.failures = &fv[0]
                    self.current = &cv[0]
                    self.fcurrent = &dv[0]
                    self.inflight_array, self.failures_array = inflight_view, failures_view
                    self.current_array, self.fcurrent_array = current_view, fcurrent_view
                    if config.period and old.period:
                        self.cursor = (self.cursor * config.period) // old.period
                    elif config.period:
                        self.cursor = 0
                    self._config = config

    @property
    def _select_config(self) -> SelectConfig:
        """The current configuration."""
        with cython.critical_section(self):
            return self._config

    def _set_deadline(self, deadline: float | None) -> None:
        """Ask to be called back (``_on_deadline``) at the first pick at or after `deadline`."""
        cdef double when = 0.0 if deadline is None else float(deadline)
        cdef bint pending = deadline is not None
        with cython.critical_section(self):
            self.pending = pending
            if pending:
                self.deadline = when

    cdef int _tick(self) except -1:
        if self.pending:
            now = self.clock()
            if now >= self.deadline:
                self.pending = False
                self._on_deadline(now)
        return 0

    cdef SelectConfig _fresh_config(self):
        with cython.critical_section(self):
            return self._config

    # -- one pick ---------------------------------------------------------------------------------

    cdef uint64_t _draw(self) noexcept:
        self.rng += GOLDEN
        return _mix(self.rng)

    cdef Py_ssize_t _pick_locked(self, SelectConfig cfg, uint64_t h,
                                 const uint8_t* excluded) noexcept:
        """One pick under the critical section; -1 when no node can be picked. C only."""
        cdef Py_ssize_t k = cfg.n_eligible, j
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
            if cfg.int_weights != NULL:
                return _swrr_step_int(cfg.int_weights, self.current, cfg.eligible, k,
                                      cfg.int_total)
            return _swrr_step_float(cfg.weights, self.fcurrent, cfg.eligible, k,
                                    cfg.float_total)
        if cfg.strategy == RANDOM:
            d = self._draw()
            if excluded == NULL:
                return _alias_pick(cfg, d)
            for j in range(16):
                node = _alias_pick(cfg, d)
                if not excluded[node]:
                    return node
                d = self._draw()
            return _weighted_among(cfg, excluded, -1, d)
        if cfg.strategy == LEAST_REQUEST:
            d = self._draw()
            return _p2c(cfg, self.inflight, d, excluded)
        # RING
        return _ring_pick(cfg, self.inflight, self.total_inflight, h, excluded)

    cdef Py_ssize_t _smooth_excluding(self, SelectConfig cfg, const uint8_t* excluded) noexcept:
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
        return _swrr_step_excluding(cfg, self.current, self.fcurrent, excluded)

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
            cfg = self._fresh_config()
            # Hashing the key and reading `exclude` may run Python code: outside the section.
            h = self._key_hash(cfg, key)
            mask = self._excluded_mask(cfg, exclude)
            if mask is not None:
                mv = mask
                excluded = &mv[0]
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale:
                    node = self._pick_locked(cfg, h, excluded)
        if node < 0:
            if not cfg.nodes:
                raise NoAvailableNodeError("the balancer has no nodes")
            if excluded != NULL and cfg.n_eligible:
                raise NoAvailableNodeError("every available node is excluded")
            raise NoAvailableNodeError(
                "every node is ejected or marked down (when_all_down='raise')")
        picked[0] = node
        return cfg

    def pick(self, key: str | bytes | int | None = None,
             exclude: str | Iterable[str] | None = None) -> str:
        """Pick a node for one request, by the balancer's strategy.

        ``key`` is required by the "ring" strategy (the request's affinity key: str, bytes-like
        or int) and ignored by the others. ``exclude`` names nodes not to pick (one name or an
        iterable), for a retry after a failure: the pick then goes to the rest, by their weights.
        Raises NoAvailableNodeError when no node can be picked (all excluded, or all down with
        ``when_all_down="raise"``).
        """
        cdef Py_ssize_t node
        cdef SelectConfig cfg = self._pick(key, exclude, &node)
        return cfg.nodes[node]

    def pick_many(self, n_or_keys: int | Iterable[Any] | npt.ArrayLike,
                  out: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
        """Pick many nodes at once: int32 indices into ``nodes``; equal to a loop of ``pick``.

        Pass a count (``pick_many(1000)``), or the keys for the "ring" strategy
        (``pick_many(keys)``: a list, numpy or pyarrow array, as ringkit.hash64_many reads). The
        picks do not take leases: the in-flight counts are read once, as the batch starts.
        ``out``, if given, is a writeable, aligned, C-contiguous int32 array of the batch's
        length, which receives the picks and is returned.
        """
        cdef SelectConfig cfg
        cdef RingState hashed = None
        cdef Py_ssize_t n, i, size
        cdef uint64_t start
        cdef int32_t[::1] rv
        cdef const uint64_t[::1] hv
        cdef int64_t[::1] cv
        cdef int64_t m
        cdef bint stale = True, bad = False
        self._tick()
        cfg = self._fresh_config()
        if cfg.strategy == RING:
            if isinstance(n_or_keys, (int, np.integer)) and not isinstance(n_or_keys, bool):
                raise TypeError("strategy='ring' picks by key: pass the keys, not a count")
            batch = as_batch(n_or_keys, "keys")
            n = len(batch)
        else:
            if isinstance(n_or_keys, bool) or not isinstance(n_or_keys, (int, np.integer)):
                raise TypeError(f"n must be an int (strategy={STRATEGIES[cfg.strategy]!r} picks "
                                f"without keys), got {type(n_or_keys).__name__}")
            if n_or_keys < 0:
                raise ValueError(f"n must be >= 0, got {n_or_keys}")
            n = n_or_keys
        result = checked_output(out, _INT32, (n,), "out")
        if n == 0:
            return result
        rv = result
        while stale:
            if cfg.strategy == RING and (hashed is None or hashed.algo != cfg.ring.algo
                                         or hashed.seed_value != cfg.ring.seed_value
                                         or hashed.ketama != cfg.ring.ketama):
                hv = cfg.ring.batch_hashes(batch, n, "keys")
                hashed = cfg.ring
            # A private copy of the in-flight counts, for the strategies that read them without
            # the GIL: releasing it suspends the section, and a change may free the shared array.
            size = len(cfg.nodes)
            counts = np.empty(max(size, 1), dtype=np.int64)
            cv = counts
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale:
                    if cfg.n_eligible == 0:
                        bad = True
                    elif cfg.strategy == SMOOTH and cfg.period:
                        start = <uint64_t>self.cursor
                        self.cursor = (self.cursor + n) % cfg.period
                        with nogil:
                            _smooth_fill(cfg, <Py_ssize_t>start, n, &rv[0])
                    elif cfg.strategy == RANDOM or cfg.strategy == LEAST_REQUEST:
                        # Every pick takes one draw: advance the shared state past the batch
                        # now, and draw the batch from a private copy without the GIL.
                        start = self.rng
                        self.rng += <uint64_t>n * GOLDEN
                        memcpy(&cv[0], self.inflight, size * sizeof(int64_t))
                        with nogil:
                            _random_fill(cfg, &cv[0], start, n, &rv[0])
                    elif cfg.strategy == RING:
                        memcpy(&cv[0], self.inflight, size * sizeof(int64_t))
                        m = self.total_inflight
                        with nogil:
                            for i in range(n):
                                rv[i] = <int32_t>_ring_pick(cfg, &cv[0], m, hv[i], NULL)
                    else:
                        for i in range(n):
                            rv[i] = <int32_t>self._pick_locked(cfg, 0, NULL)
            if stale:
                cfg = self._fresh_config()
        if bad:
            raise NoAvailableNodeError("every node is ejected or marked down "
                                       "(when_all_down='raise')")
        return result

    # -- leases and outcomes ---------------------------------------------------------------------

    def lease(self, key: str | bytes | int | None = None) -> Lease:
        """A context manager that picks a node, counts it in flight and reports the outcome.

        ``with balancer.lease(key) as node:`` picks like ``pick(key)`` on entering and counts a
        request in flight on `node` until the block ends; leaving by an exception reports a
        failure, leaving normally a success.
        """
        cdef Lease lease = Lease.__new__(Lease)
        lease.owner = self
        lease.key = key
        lease.index = -1
        return lease

    cdef int _begin(self, Lease lease) except -1:
        cdef Py_ssize_t node
        cdef bint stale = True
        cdef SelectConfig cfg = self._pick(lease.key, None, &node)
        lease.node = cfg.nodes[node]
        while stale:
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale and node >= 0:
                    self.inflight[node] += 1
                    self.total_inflight += 1
            if stale:
                # Swapped meanwhile: count it under the new configuration, by name.
                cfg = self._fresh_config()
                node = cfg.positions.get(lease.node, -1)
        lease.config = cfg
        lease.index = node
        return 0

    cdef Py_ssize_t _position(self, SelectConfig cfg, object name) except -2:
        return cfg.positions.get(name, -1)

    cdef int _finish(self, Lease lease, bint ok) except -1:
        cdef SelectConfig cfg = lease.config
        cdef Py_ssize_t i = lease.index
        cdef bint tripped = False, stale = True
        cdef int32_t count = 0
        while stale:
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale and i >= 0:
                    if self.inflight[i] > 0:
                        self.inflight[i] -= 1
                        self.total_inflight -= 1
                    tripped = self._outcome(i, ok)
                    count = self.failures[i]
            if stale:
                cfg = self._fresh_config()
                i = self._position(cfg, lease.node)
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

    def report(self, node: str, ok: object) -> None:
        """Report the outcome of a request to `node` made without a lease (`ok` true: success).

        Consecutive failures count towards ``max_failures``, after which the balancer ejects the
        node; a success resets the count.
        """
        cdef SelectConfig cfg
        cdef Py_ssize_t i
        cdef bint tripped = False, stale = True
        cdef int32_t count = 0
        cdef bint good = bool(ok)
        while stale:
            cfg = self._fresh_config()
            i = self._position(cfg, node)
            if i < 0:
                if not isinstance(node, str):
                    raise TypeError(f"node must be a str node name, got {type(node).__name__}")
                raise UnknownNodeError(node, f"node: unknown node {node!r}")
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale:
                    tripped = self._outcome(i, good)
                    count = self.failures[i]
        if tripped:
            self._on_failures(node, count)

    cdef tuple _copy_counts(self, bint failures):
        """(configuration, a copy of its failure or in-flight counts), read in one section."""
        cdef SelectConfig cfg = self._fresh_config()
        cdef bint stale = True
        cdef Py_ssize_t n
        cdef int32_t[::1] fv
        cdef int64_t[::1] iv
        while stale:
            n = len(cfg.nodes)
            copy = np.zeros(max(n, 1), dtype=np.int32 if failures else np.int64)
            if failures:
                fv = copy
            else:
                iv = copy
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale and n:
                    if failures:
                        memcpy(&fv[0], self.failures, n * sizeof(int32_t))
                    else:
                        memcpy(&iv[0], self.inflight, n * sizeof(int64_t))
            if stale:
                cfg = self._fresh_config()
        return cfg, copy[:n]

    def _failure_counts(self) -> dict[str, int]:
        """Consecutive failures of each node of the current configuration."""
        cfg, counts = self._copy_counts(True)
        return dict(zip(cfg.nodes, counts.tolist()))

    def _reset_failures(self, node: str) -> None:
        """Forget `node`'s consecutive failures."""
        cdef SelectConfig cfg
        cdef Py_ssize_t i
        cdef bint stale = True
        while stale:
            cfg = self._fresh_config()
            i = self._position(cfg, node)
            with cython.critical_section(self):
                stale = cfg is not self._config
                if not stale and i >= 0:
                    self.failures[i] = 0

    @property
    def in_flight(self) -> dict[str, int]:
        """{node: requests in flight} (leases entered and not yet exited)."""
        cfg, counts = self._copy_counts(False)
        return dict(zip(cfg.nodes, counts.tolist()))

    def _on_deadline(self, now: float) -> None:
        """Called at the first pick at or after the deadline set by _set_deadline."""
        pass

    def _on_failures(self, node: str, count: int) -> None:
        """Called when `node` reaches max_failures consecutive failures."""
        pass


cdef inline Py_ssize_t _alias_pick(SelectConfig cfg, uint64_t d) noexcept nogil:
    cdef uint32_t column = _below(<uint32_t>(d >> 32), cfg.n_eligible)
    cdef int32_t keep = cfg.eligible[column]
    cdef int32_t other = cfg.alias[column]
    # Select without a branch: the coin is random, so a branch would mispredict half the time
    # (measured: 6 ns a pick with the branch, under 2 ns without, in pick_many).
    cdef int32_t mask = -(<int32_t>(<uint32_t>d < cfg.prob[column]))
    return other ^ ((keep ^ other) & mask)

cdef Py_ssize_t _weighted_among(SelectConfig cfg, const uint8_t* excluded, Py_ssize_t skip,
                                uint64_t d) noexcept nogil:
    """A weighted draw in O(k) among the eligible nodes that are neither excluded (when
    `excluded` is not NULL) nor `skip`; -1 when there is none. For when the alias table keeps
    landing on nodes that may not be picked: the draw still follows the weights of the rest."""
    cdef Py_ssize_t j, node, last = -1, first = -1
    cdef double total = 0.0, target
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if node != skip and (excluded == NULL or not excluded[node]):
            if first < 0:
                first = node
            if cfg.weights[node] > 0:
                total += cfg.weights[node]
                last = node
    if last < 0:
        # Nothing left but nodes whose weight is too small beside the largest to be a double
        # once scaled: they may still be picked, having positive weights.
        return first
    target = <double>(d >> 11) * (1.0 / 9007199254740992.0) * total
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if node != skip and (excluded == NULL or not excluded[node]):
            target -= cfg.weights[node]
            if target < 0.0:
                return node
    return last

cdef inline Py_ssize_t _p2c(SelectConfig cfg, const int64_t* inflight, uint64_t d,
                            const uint8_t* excluded) noexcept nogil:
    """Power of two choices, weighted: a first candidate drawn in proportion to weight, a second
    drawn uniformly among the other nodes; the one with fewer requests in flight per unit of
    weight wins, the first on ties. With nothing in flight every pick is the first candidate,
    so the picks follow the weights exactly, as every strategy's do."""
    cdef Py_ssize_t k = cfg.n_eligible, na, nb
    # The second draw's bits: d times an odd constant (a bijection; its top half depends on
    # every bit of d), cheaper than a second mix on the hot path.
    cdef uint64_t e = d * SALT
    if excluded != NULL:
        na = _weighted_among(cfg, excluded, -1, d)
        if na < 0:
            return -1
        nb = _uniform_among(cfg, excluded, na, e)
        if nb < 0:
            return na
    elif cfg.uniform:
        # Equal weights: two distinct candidates, uniformly, from the one draw.
        if k == 1:
            return cfg.eligible[0]
        na = _below(<uint32_t>(d >> 32), k)
        nb = _below(<uint32_t>d, k - 1)
        if nb >= na:
            nb += 1
        na = cfg.eligible[na]
        nb = cfg.eligible[nb]
    else:
        na = _alias_pick(cfg, d)
        # Uniform over the k - 1 others: position k - 1 stands in for the first candidate's.
        nb = cfg.eligible[_below(<uint32_t>(e >> 32), k - 1)]
        if nb == na:
            nb = cfg.eligible[k - 1]
    # inflight[na] / w[na] <= inflight[nb] / w[nb], without dividing
    if inflight[na] * cfg.weights[nb] <= inflight[nb] * cfg.weights[na]:
        return na
    return nb

cdef Py_ssize_t _uniform_among(SelectConfig cfg, const uint8_t* excluded, Py_ssize_t skip,
                               uint64_t d) noexcept nogil:
    """A uniform draw in O(k) among the eligible nodes neither excluded nor `skip`; -1 if none."""
    cdef Py_ssize_t j, node, count = 0, target
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if node != skip and not excluded[node]:
            count += 1
    if count == 0:
        return -1
    target = _below(<uint32_t>(d >> 32), count)
    for j in range(cfg.n_eligible):
        node = cfg.eligible[j]
        if node != skip and not excluded[node]:
            if target == 0:
                return node
            target -= 1
    return -1

cdef Py_ssize_t _ring_pick(SelectConfig cfg, const int64_t* inflight, int64_t total_inflight,
                           uint64_t h, const uint8_t* excluded) noexcept nogil:
    """Hash affinity with bounded load: from the key's point, the first eligible node clockwise
    whose in-flight count is below ceil(load_factor * (m + 1) * its share) (_ring.bounded_walk).
    A key whose ring holds no node that may take it (the eligible nodes are ones the ring leaves
    off, their shares being too small for a point) goes to one of them by weight, by its hash."""
    cdef Py_ssize_t node
    # The product is often an integer on paper (1.1 x 52 x 5/26 = 11) and a few ulps above it in
    # floating point, where ceil would let a node take one more: take the room a hair lower.
    cdef double room = cfg.load_factor * (total_inflight + 1) * (1.0 - 1e-12)
    if cfg.ring.npoints == 0:
        node = -1
    else:
        node = bounded_walk(cfg.ring, ring_find(cfg.ring, h), cfg.ring_map, inflight,
                            cfg.shares, room, excluded)
    if node < 0 and cfg.off_ring:
        node = _weighted_among(cfg, excluded, -1, _mix(h))
    return node

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


@cython.final
cdef class Lease:
    """``with balancer.lease(key) as node:`` counts the request in flight while the block runs
    and reports its outcome: leaving by an exception counts as a failure."""
    cdef Selector owner
    cdef SelectConfig config
    cdef object key
    cdef Py_ssize_t index
    cdef readonly object node

    def __enter__(self) -> str:
        """Pick the node and count the request in flight on it; returns the node's name."""
        if self.config is not None or self.node is not None:
            raise RuntimeError("a lease is entered once")
        self.owner._begin(self)
        return self.node

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        """End the request: a success, or a failure when the block raised."""
        if self.config is not None:
            self.owner._finish(self, exc_type is None)
            self.config = None
        return False
