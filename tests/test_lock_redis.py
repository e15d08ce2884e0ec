"""RedisBackend against real redis-server processes: keys, tokens, extend, owned, waiting, restart
detection, quorum token monotonicity, an unreachable server, and bad configuration.

The fault scenarios (killed, paused and restarted servers, paused clients, many processes) are in
test_lock_faults.py. Servers come from the ``redis_servers`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import math
import random
import threading
import time

import pytest
import redis

from ringkit import LockError, LockLostError, LockNotOwnedError, LockQuorumError, QuorumError
from ringkit.lock import Lock, LockEvent, RedisBackend

PREFIX = "ringkit:lock:"


@pytest.fixture
def make_backend():  # type: ignore[no-untyped-def]
    """Factory for RedisBackends on given RedisProcs (initialized unless asked not to), closed
    at the end of the test."""
    made: list[RedisBackend] = []

    def make(servers, *, initialize: bool = True, **options) -> RedisBackend:  # type: ignore[no-untyped-def]
        backend = RedisBackend([server.url for server in servers], **options)
        made.append(backend)
        if initialize:
            backend.initialize()
        return backend

    yield make
    for backend in made:
        backend.close()


def server_keys(server) -> set[str]:  # type: ignore[no-untyped-def]
    return {key.decode() for key in server.client().keys("*")}


def hash_tag(key: str) -> str:
    """The part of a key that Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1:key.index("}", start + 1)]


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for what follows a round decided before every reply came (a late grant landing or
    being released); the bound is a hang guard, not a speed requirement."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def server_time_us(server) -> int:  # type: ignore[no-untyped-def]
    seconds, micros = server.client().time()
    return seconds * 1_000_000 + micros


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.redis
def test_keys_start_with_the_prefix_and_share_the_hash_tag(redis_servers, make_backend) -> None:
    (server,) = redis_servers(1)
    backend = make_backend([server], prefix="app:locks:")
    lock = Lock("orders/42", backend, ttl=10.0)
    with lock:
        keys = server_keys(server)
        assert keys == {"app:locks:{orders/42}", "app:locks:{orders/42}:fence",
                        "app:locks:__epoch__"}
        assert all(key.startswith("app:locks:") for key in keys)
        assert {hash_tag(k) for k in keys if k != "app:locks:__epoch__"} == {"orders/42"}
    assert server_keys(server) == {"app:locks:{orders/42}:fence", "app:locks:__epoch__"}


@pytest.mark.redis
def test_keys_in_cluster_mode_have_no_per_server_key(redis_servers, make_backend) -> None:
    """cluster=True: every key of a lock is in the lock's slot, and restart detection (whose
    marker is a per-server key) is off, so a fresh server grants at once."""
    (server,) = redis_servers(1)
    backend = make_backend([server], initialize=False, cluster=True)
    lock = Lock("c", backend, ttl=10.0)
    assert lock.acquire(blocking=False)
    assert server_keys(server) == {f"{PREFIX}{{c}}", f"{PREFIX}{{c}}:fence"}
    lock.release()


@pytest.mark.redis
def test_keys_of_a_quorum_lock_live_on_its_placement(redis_servers, make_backend) -> None:
    servers = redis_servers(5)
    backend = make_backend(servers, replicas=3)
    by_name = {server.name: server for server in servers}
    placements = set()
    for i in range(12):
        name = f"placed-{i}"
        placement = backend.servers_for(name)
        assert len(placement) == 3 and len(set(placement)) == 3
        placements.add(tuple(sorted(placement)))
        with Lock(name, backend, ttl=10.0):
            # On a majority of the placement at least (a grant that came after the acquire
            # was decided may have been given back already), and nowhere else.
            holding = {server.name for server in servers
                       if f"{PREFIX}{{{name}}}" in server_keys(server)}
            assert holding <= set(placement) and len(holding) >= 2
        # The release returns once a majority released; the last one follows at once.
        deadline = time.monotonic() + 5.0
        while any(f"{PREFIX}{{{name}}}" in server_keys(by_name[s]) for s in placement):
            assert time.monotonic() < deadline
            time.sleep(0.005)
    assert len(placements) > 1  # the ring spreads names over different triples


# -- one server: tokens, extend, owned ------------------------------------------------------------


@pytest.mark.redis
def test_single_server_tokens_strictly_increase_above_the_server_clock(redis_servers,
                                                                        make_backend) -> None:
    (server,) = redis_servers(1)
    backend = make_backend([server])
    lock = Lock("t", backend, ttl=10.0)
    tokens = []
    for _ in range(30):
        before = server_time_us(server)
        with lock:
            tokens.append(lock.token)
            assert lock.token >= before  # the TIME floor
    assert tokens == sorted(set(tokens))
    fence = int(server.client().get(f"{PREFIX}{{t}}:fence"))
    assert fence == tokens[-1]


@pytest.mark.redis
@pytest.mark.parametrize("n", [1, 3])
def test_extend_sets_not_adds_and_owned_asks_the_servers(redis_servers, make_backend, n) -> None:
    servers = redis_servers(n)
    backend = make_backend(servers)
    lock = Lock("e", backend, ttl=10.0)
    lock.acquire()
    majority = n // 2 + 1

    def remaining() -> list[int]:
        return [server.client().pttl(f"{PREFIX}{{e}}") for server in servers]

    # A majority holds the lease with the remaining time extend() set (a grant that arrived
    # after the acquire was decided keeps its own expiry, on a minority).
    lock.extend(1.0)
    assert 0 < lock.validity() <= 1.0
    assert sum(1 for t in remaining() if 0 < t <= 1000) >= majority
    lock.extend()
    assert 1.0 < lock.validity() <= 10.0
    assert sum(1 for t in remaining() if 1000 < t <= 10_000) >= majority
    assert lock.owned()
    for server in servers:            # the lease vanishes behind the client's back
        server.client().delete(f"{PREFIX}{{e}}")
    assert not lock.owned()
    with pytest.raises(LockLostError):
        lock.extend()
    with pytest.raises(LockLostError):
        lock.release()


@pytest.mark.redis
def test_release_after_expiry_never_deletes_the_next_holders_lease(redis_servers,
                                                                   make_backend) -> None:
    servers = redis_servers(3)
    backend = make_backend(servers)
    first = Lock("r", backend, ttl=0.2)
    first.acquire()
    time.sleep(0.3)
    second = Lock("r", backend, ttl=10.0)
    assert second.acquire(blocking=False)
    with pytest.raises(LockLostError):
        first.release()
    assert second.owned()
    holder = [server.client().get(f"{PREFIX}{{r}}") for server in servers]
    assert len(set(holder) - {None}) == 1 and holder.count(None) <= 1
    second.release()
    # Expired and nobody took it: the release still reports the loss instead of pretending.
    third = Lock("r", backend, ttl=0.2)
    third.acquire()
    time.sleep(0.3)
    with pytest.raises(LockLostError):
        third.release()


@pytest.mark.redis
def test_release_of_a_lock_not_held_on_redis(redis_servers, make_backend) -> None:
    (server,) = redis_servers(1)
    lock = Lock("n", make_backend([server]))
    with pytest.raises(LockNotOwnedError):
        lock.release()
    other = Lock("n", lock.backend)
    other.acquire()
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert other.owned()
    other.release()


# -- restart detection ----------------------------------------------------------------------------


@pytest.mark.redis
def test_fresh_server_without_initialize_withholds_its_vote_for_max_ttl(redis_servers,
                                                                        make_backend) -> None:
    (server,) = redis_servers(1)
    max_ttl = 1.0
    backend = make_backend([server], initialize=False, max_ttl=max_ttl)
    started = time.monotonic()
    lock = Lock("fresh", backend, ttl=0.2)
    assert not lock.acquire(blocking=False)          # no epoch marker: it is "restarting"
    assert f"{PREFIX}__epoch__" in server_keys(server)
    assert not lock.acquire(timeout=0.2)
    assert lock.acquire(timeout=max_ttl + 5.0)
    assert time.monotonic() - started >= max_ttl * 0.95  # not before its quiet period ended
    lock.release()
    assert backend.initialize() == []                 # it has a marker now


@pytest.mark.redis
def test_persistent_servers_grant_at_once(redis_servers, make_backend) -> None:
    """persistent=True: a server without a marker never lost an acknowledged lease, so it is
    new, and grants at once (and records max_ttl like initialize() does)."""
    (server,) = redis_servers(1)
    backend = make_backend([server], initialize=False, persistent=True, max_ttl=30.0)
    lock = Lock("quick", backend, ttl=30.0)
    assert lock.acquire(blocking=False)
    lock.release()
    assert server.client().get(f"{PREFIX}__epoch__") == b"0:30000"


@pytest.mark.redis
def test_initialize_marks_only_new_servers(redis_servers, make_backend) -> None:
    servers = redis_servers(3)
    backend = make_backend(servers, initialize=False)
    assert sorted(backend.initialize()) == sorted(server.name for server in servers)
    assert backend.initialize() == []
    lock = Lock("i", backend, ttl=10.0)
    assert lock.acquire(blocking=False)
    lock.release()


# -- quorum tokens --------------------------------------------------------------------------------


@pytest.mark.redis
def test_minority_grants_are_released_and_tokens_still_increase(redis_servers,
                                                                make_backend) -> None:
    """Attempts that only one of three servers grants (the other two hold the lease for an
    intruder) fail and give that grant back; holders in between, each granted by a different
    majority (one random server refuses), still get strictly increasing tokens. (Per-server
    counters bumped on grant, with the largest of the granting majority as the token, would
    hand out equal tokens here.)"""
    servers = redis_servers(3)
    backend = make_backend(servers)
    lease = f"{PREFIX}{{m}}"
    rng = random.Random(5)
    tokens = []
    for round_ in range(20):
        refusing = rng.choice(servers)
        refusing.client().set(lease, "intruder", px=60_000)
        lock = Lock("m", backend, ttl=10.0)
        assert lock.acquire(blocking=False)
        tokens.append(lock.token)
        lock.release()
        refusing.client().delete(lease)
        blocked = rng.sample(servers, 2)
        for server in blocked:
            server.client().set(lease, f"intruder-{round_}", px=60_000)
        attempt = Lock("m", backend, ttl=10.0)
        assert not attempt.acquire(blocking=False)
        # The minority grant is released: at once when it came in time, right after it
        # when it came after the attempt was decided by the two refusals.
        free = next(server for server in servers if server not in blocked)
        wait_until(lambda: free.client().get(lease) is None)  # noqa: B023
        for server in blocked:
            assert server.client().get(lease) == f"intruder-{round_}".encode()
            server.client().delete(lease)
    assert tokens == sorted(set(tokens))


@pytest.mark.redis
def test_tokens_increase_across_holders_in_random_placements(redis_servers,
                                                             make_backend) -> None:
    """5 servers, replicas=3: 50 sequential holders over a few names, each with one random
    server of its placement refusing (held by an intruder), so each lease is granted by a
    different majority; per name the tokens strictly increase."""
    servers = redis_servers(5)
    backend = make_backend(servers, replicas=3)
    by_name = {server.name: server for server in servers}
    names = [f"p{i}" for i in range(4)]
    rng = random.Random(11)
    tokens: dict[str, list[int]] = {name: [] for name in names}
    for i in range(50):
        name = rng.choice(names)
        lease = f"{PREFIX}{{{name}}}"
        refusing = by_name[rng.choice(backend.servers_for(name))] if i % 3 else None
        if refusing is not None:
            refusing.client().set(lease, "intruder", px=60_000)
        lock = Lock(name, backend, ttl=10.0)
        assert lock.acquire(blocking=False)
        tokens[name].append(lock.token)
        # A grant that came after the acquire was decided is kept (the lease holds it): let
        # it land before the lease is dropped.
        wait_until(lambda: all(by_name[s].client().get(lease) is not None  # noqa: B023
                               for s in backend.servers_for(name)))  # noqa: B023
        if i % 2:
            lock.release()
        else:
            for server in servers:  # "crash": the lease is dropped without a release
                server.client().delete(lease)
        if refusing is not None:
            refusing.client().delete(lease)
    for seen in tokens.values():
        assert seen == sorted(set(seen))
    assert sum(len(seen) for seen in tokens.values()) == 50


# -- waiting --------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("n", [1, 3])
def test_release_wakes_a_blocked_waiter(redis_servers, make_backend, n) -> None:
    """The waiter is parked in acquire(timeout=30) with a 60 s fallback retry: only the
    release's wake-up can let it in within the 10 s this test waits for it."""
    servers = redis_servers(n)
    backend = make_backend(servers)
    holder = Lock("w", backend, ttl=30.0)
    holder.acquire()
    waiter = Lock("w", backend, ttl=30.0, retry_interval=60.0)
    result: list[object] = []

    def wait() -> None:
        try:
            result.append(waiter.acquire(timeout=30.0))
        except Exception as exc:  # noqa: BLE001
            result.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    time.sleep(0.3)   # let it subscribe and park (were it late, it would find the lock free)
    token = holder.token
    holder.release()
    thread.join(10)
    assert result == [True]
    assert waiter.token > token
    waiter.release()


@pytest.mark.redis
def test_waiter_acquires_after_a_crashed_holders_lease_expires(redis_servers,
                                                               make_backend) -> None:
    servers = redis_servers(3)
    backend = make_backend(servers)
    crashed = Lock("x", backend, ttl=0.5)
    crashed.acquire()                    # and never released: no wake-up will come
    waiter = Lock("x", backend, ttl=5.0)
    assert waiter.acquire(timeout=5.0)   # the jittered fallback retry finds it expired
    assert waiter.token > crashed.token
    waiter.release()


@pytest.mark.redis
def test_timeout_bounds_the_wait(redis_servers, make_backend) -> None:
    servers = redis_servers(3)
    backend = make_backend(servers)
    holder = Lock("b", backend, ttl=30.0)
    holder.acquire()
    started = time.monotonic()
    assert Lock("b", backend, ttl=30.0).acquire(timeout=0.3) is False
    assert time.monotonic() - started < 0.3 + 2.0
    assert Lock("b", backend, ttl=30.0).acquire(blocking=False) is False
    with pytest.raises(LockError), Lock("b", backend, blocking_timeout=0.1):
        pass  # pragma: no cover
    holder.release()


# -- unreachable servers, events ------------------------------------------------------------------


@pytest.mark.redis
def test_unreachable_server_is_a_lock_quorum_error_naming_it(unused_port) -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{unused_port}/0")
    events: list[LockEvent] = []
    lock = Lock("u", backend, ttl=1.0, on_event=events.append)
    with pytest.raises(LockQuorumError) as info:
        lock.acquire(blocking=False)
    error = info.value
    assert isinstance(error, LockError) and isinstance(error, QuorumError)
    name = f"127.0.0.1:{unused_port}/0"
    assert name in str(error)
    assert error.lock_name == "u"
    assert list(error.failed) == [name]
    assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
    assert [event.kind for event in events] == ["quorum_failed"]
    assert events[0].error is error
    # Blocking: it retries, and gives up within its timeout (plus a generous 2 s).
    started = time.monotonic()
    with pytest.raises(LockError):
        lock.acquire(timeout=0.5)
    assert time.monotonic() - started < 0.5 + 2.0
    # No timeout: it gives up after one ttl without a quorum, rather than hang.
    started = time.monotonic()
    with pytest.raises(LockQuorumError):
        lock.acquire()
    assert time.monotonic() - started < lock.ttl + 2.0
    assert not lock.locked
    backend.close()


@pytest.mark.redis
def test_unreachable_majority_names_every_failed_server(redis_servers, unused_port) -> None:
    (live,) = redis_servers(1)
    dead = [f"redis://127.0.0.1:{unused_port}/0", f"redis://127.0.0.1:{unused_port}/1"]
    backend = RedisBackend([live.url, *dead])
    live.client().set(f"{PREFIX}__epoch__", "0")      # initialize(), for the live one
    lock = Lock("q", backend, ttl=2.0)
    with pytest.raises(LockError) as info:            # the quorum failure is a LockError
        lock.acquire(blocking=False)
    error = info.value
    assert isinstance(error, LockQuorumError)
    dead_names = [f"127.0.0.1:{unused_port}/0", f"127.0.0.1:{unused_port}/1"]
    # The dead two decide the round (no majority possible): the live one may not have been
    # waited for, and is then named as not having answered in time.
    assert set(dead_names) <= set(error.failed) <= {*dead_names, live.name}
    assert all(name in str(error) for name in error.failed)
    deadline = time.monotonic() + 5.0
    while f"{PREFIX}{{q}}" in server_keys(live):      # the live server's grant is given back
        assert time.monotonic() < deadline
        time.sleep(0.005)
    backend.close()


# -- bad configuration (no server needed: URLs are not connected until used) --------------------


@pytest.mark.parametrize("servers, error, match", [
    ([], ValueError, "servers"),
    ((), ValueError, "servers"),
    (["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7001/0"], ValueError, "twice"),
    (42, TypeError, "servers"),
    ([None], TypeError, "servers"),
    ([b"redis://127.0.0.1:7001"], TypeError, "servers"),
    ([object()], TypeError, "servers"),
])
def test_bad_server_lists(servers: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RedisBackend(servers)


def test_a_client_and_a_url_for_the_same_server_are_duplicates() -> None:
    client = redis.Redis(host="127.0.0.1", port=7001)
    with pytest.raises(ValueError, match="twice"):
        RedisBackend([client, "redis://127.0.0.1:7001/0"])


@pytest.mark.parametrize("replicas, error", [(0, ValueError), (4, ValueError), (-1, ValueError),
                                             ("2", TypeError), (True, TypeError),
                                             (2.0, TypeError)])
def test_replicas_out_of_range(replicas: object, error: type[Exception]) -> None:
    urls = [f"redis://127.0.0.1:{7001 + i}/0" for i in range(3)]
    with pytest.raises(error, match="replicas"):
        RedisBackend(urls, replicas=replicas)  # type: ignore[arg-type]


def test_default_replicas() -> None:
    assert RedisBackend([f"redis://127.0.0.1:{7001 + i}/0" for i in range(5)]).replicas == 5
    assert RedisBackend([f"redis://127.0.0.1:{7001 + i}/0" for i in range(8)]).replicas == 5
    assert RedisBackend("redis://127.0.0.1:7001/0").replicas == 1


@pytest.mark.parametrize("options, error", [
    ({"prefix": 3}, TypeError),
    ({"max_ttl": -1}, ValueError),
    ({"max_ttl": math.nan}, ValueError),
    ({"max_ttl": 10 * 86400}, ValueError),
    ({"max_ttl": "60"}, TypeError),
    ({"persistent": 1}, TypeError),
    ({"socket_timeout": 0}, ValueError),
    ({"socket_timeout": "1"}, TypeError),
])
def test_bad_options(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        RedisBackend("redis://127.0.0.1:7001/0", **options)  # type: ignore[arg-type]


def test_bad_names_on_the_redis_backend() -> None:
    backend = RedisBackend("redis://127.0.0.1:7001/0")
    with pytest.raises(ValueError, match="name"):
        backend.acquire("", "holder", 1.0)
    with pytest.raises(TypeError, match="name"):
        backend.servers_for(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        backend.acquire("x", "holder", math.nan)


@pytest.mark.redis
@pytest.mark.parametrize("n", [1, 3])
def test_a_waiter_sleeps_until_the_release_wakes_it(redis_servers, make_backend, n) -> None:
    """The waiter tries, subscribes, tries once more (a release in between is not missed), then
    sleeps on the channel: its next attempt comes from the release's wake-up, a few milliseconds
    after it (here bounded by a hang guard far below its 60 s fallback retry), and it makes no
    attempt in between (it used to return from its wait on the subscribe acknowledgement)."""
    servers = redis_servers(n)
    holder = Lock("wk", make_backend(servers), ttl=30.0)
    holder.acquire()
    backend = make_backend(servers)
    attempts: list[float] = []
    real = backend.acquire

    def counting(name: str, holder_id: str, ttl: float):  # type: ignore[no-untyped-def]
        attempts.append(time.monotonic())
        return real(name, holder_id, ttl)

    backend.acquire = counting  # type: ignore[method-assign]
    waiter = Lock("wk", backend, ttl=30.0, retry_interval=60.0)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(waiter.acquire(timeout=30.0)),
                              daemon=True)
    thread.start()
    wait_until(lambda: len(attempts) >= 2)
    time.sleep(0.3)                      # parked: nothing should happen now
    assert len(attempts) == 2
    released = time.monotonic()
    holder.release()
    thread.join(10.0)
    assert result == [True]
    assert len(attempts) == 3            # one more, after the wake-up
    woke = attempts[2] - released
    assert 0 <= woke < 2.0, woke         # woken by the release, not the 60 s retry
    waiter.release()
