"""Locks under faults, against real redis-server processes: many client processes, servers killed
(SIGKILL) or paused (SIGSTOP) mid-run or mid-protocol, restarted empty, and a holder paused past
its ttl while another process takes the lock.

The "fenced store" is a file holding ``count last_token``: a writer that brings a token not
larger than the last one is refused (and, for the mutual exclusion runs, counted as a
violation). Client processes run small scripts with ``sys.executable -c`` and report as JSON on
stdout. Bounds on time are the ones in the semantics (a QuorumError within the timeout plus a
generous 2 s), never latencies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringkit import LockError, LockQuorumError, QuorumError
from ringkit.lock import Lock, LockEvent, RedisBackend
from ringkit.lock.protocol import acquire_steps

PREFIX = "ringkit:lock:"
WORKER_DEADLINE = 120.0   # seconds a client process may take before the test calls it hung


def child_env() -> dict[str, str]:
    """This environment, with PYTHONPATH made absolute, so a child imports the same ringkit."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry) for entry in env["PYTHONPATH"].split(os.pathsep) if entry)
    env.pop("PYTHONSTARTUP", None)
    return env


# A client process: waits for the go file, then takes the lock `n` times and, under it, does a
# read-modify-write of the store, checking the fencing token against the last one written.
WORKER = r"""
import json, os, sys, time
from ringkit import LockError, LockLostError
from ringkit.lock import Lock, RedisBackend

cfg = json.loads(sys.argv[1])
backend = RedisBackend(cfg["urls"])
lock = Lock(cfg["name"], backend, ttl=cfg["ttl"])
report = {"done": 0, "violations": 0, "lost": 0, "quorum_errors": 0, "tokens": []}
while not os.path.exists(cfg["go"]):
    time.sleep(0.002)
for _ in range(cfg["n"]):
    while True:
        try:
            if lock.acquire(timeout=30.0):
                break
        except LockError:
            report["quorum_errors"] += 1
    token = lock.token
    with open(cfg["store"], "r+") as store:
        count, last = map(int, store.read().split())
        if token <= last:
            report["violations"] += 1
        store.seek(0)
        store.write(f"{count + 1} {max(token, last)}\n")
        store.truncate()
    report["tokens"].append(token)
    try:
        lock.release()
    except LockLostError:
        report["lost"] += 1
    report["done"] += 1
backend.close()
print(json.dumps(report))
"""


def read_store(path: Path) -> tuple[int, int]:
    count, last = map(int, path.read_text().split())
    return count, last


def run_workers(tmp_path: Path, urls: list[str], *, workers: int, each: int, ttl: float = 10.0,
                during=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """Run `workers` client processes of `each` acquisitions; `during(store)` runs in this
    process while they work (to kill servers), then their reports are returned."""
    store = tmp_path / "store"
    store.write_text("0 0\n")
    go = tmp_path / "go"
    config = {"urls": urls, "name": "shared", "ttl": ttl, "n": each, "store": str(store),
              "go": str(go)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
                              cwd=tmp_path) for _ in range(workers)]
    try:
        go.touch()
        if during is not None:
            during(store)
        reports = []
        deadline = time.monotonic() + WORKER_DEADLINE
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err.decode()[-3000:]
            reports.append(json.loads(out))
        return reports
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_exclusion(tmp_path: Path, reports: list[dict], total: int) -> None:
    count, last = read_store(tmp_path / "store")
    assert count == total
    assert sum(r["done"] for r in reports) == total
    assert sum(r["violations"] for r in reports) == 0
    assert sum(r["lost"] for r in reports) == 0
    tokens = sorted(t for r in reports for t in r["tokens"])
    assert len(set(tokens)) == total          # no two holders ever had the same token
    assert tokens[-1] == last
    for r in reports:                         # and each process saw its own tokens increase
        assert r["tokens"] == sorted(set(r["tokens"]))


def peek_count(store: Path) -> int:
    """The count while workers write it (a read may catch a write half done: read again)."""
    while True:
        try:
            return read_store(store)[0]
        except ValueError:
            time.sleep(0.001)


def wait_for_count(store: Path, at_least: int, timeout: float = WORKER_DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peek_count(store) >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"the workers did not reach {at_least} acquisitions")


def leases(server, name: str) -> object:  # type: ignore[no-untyped-def]
    return server.client().get(f"{PREFIX}{{{name}}}")


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for something that follows a round that was decided before every reply came (a
    late grant's release); the bound is a hang guard, not a speed requirement."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# -- mutual exclusion -----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("n_servers", [1, 3])
def test_mutual_exclusion_8_processes_x_200(redis_servers, tmp_path, n_servers) -> None:
    servers = redis_servers(n_servers)
    RedisBackend([s.url for s in servers]).initialize()
    reports = run_workers(tmp_path, [s.url for s in servers], workers=8, each=200)
    check_exclusion(tmp_path, reports, 1600)


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.slow
@pytest.mark.parametrize("n_servers, kill", [(3, 1), (5, 2)])
def test_acquisitions_go_on_when_a_minority_is_killed_mid_run(redis_servers, tmp_path,
                                                              n_servers, kill) -> None:
    servers = redis_servers(n_servers)
    RedisBackend([s.url for s in servers]).initialize()
    total = 4 * 60
    at_kill: list[int] = []

    def kill_during(store: Path) -> None:
        for i in range(kill):
            wait_for_count(store, total * (i + 1) // (kill + 2))
            servers[i].kill()
            at_kill.append(peek_count(store))

    reports = run_workers(tmp_path, [s.url for s in servers], workers=4, each=60,
                          during=kill_during)
    assert not any(server.running for server in servers[:kill])
    check_exclusion(tmp_path, reports, total)
    assert at_kill[-1] < total - 50   # most acquisitions came after the last kill


# -- a majority killed ----------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.parametrize("n_servers, kill", [(3, 2), (5, 3)])
def test_majority_killed_is_a_quorum_error_and_never_grants(redis_servers, n_servers,
                                                            kill) -> None:
    servers = redis_servers(n_servers)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    events: list[LockEvent] = []
    lock = Lock("k", backend, ttl=5.0, on_event=events.append)
    with lock:
        before = lock.token
    for server in servers[:kill]:
        server.kill()
    survivors = servers[kill:]
    for timeout in (0.0, 1.0):
        started = time.monotonic()
        with pytest.raises(LockQuorumError) as info:
            lock.acquire(timeout=timeout)
        assert time.monotonic() - started < timeout + 2.0
        assert isinstance(info.value, QuorumError) and isinstance(info.value, LockError)
        # The dead decide the round (no majority is possible): a survivor that had not
        # answered by then is named too, as not having answered in time.
        assert {s.name for s in servers[:kill]} <= set(info.value.failed) \
            <= {s.name for s in servers}
        assert not lock.locked
        for server in survivors:                  # the survivors' grants were given back
            wait_until(lambda server=server: leases(server, "k") is None)
    with pytest.raises(LockError):
        lock.acquire(blocking=False)
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["acquired", "released"]
    assert set(kinds[2:]) == {"quorum_failed"} and len(kinds) >= 5
    assert all(isinstance(e.error, LockQuorumError) for e in events[2:])
    # Bring the dead back (empty, initialized as new): locking resumes with a larger token.
    for server in servers[:kill]:
        server.restart()
    assert sorted(backend.initialize()) == sorted(s.name for s in servers[:kill])
    with lock:
        assert lock.token > before
    backend.close()


# -- a holder paused past its ttl ----------------------------------------------------------------


# The holder: takes the lock with auto renewal and writes its token to the fenced store, says
# "acquired", then blocks on stdin. The test SIGSTOPs it, takes the lock itself, writes a newer
# token, SIGCONTs it and sends "write": the holder tries the store with its old token, waits to
# hear of the loss, tries release(), and reports.
HOLDER = r"""
import json, sys, threading
from ringkit import LockLostError, LockNotOwnedError
from ringkit.lock import Lock, RedisBackend

cfg = json.loads(sys.argv[1])
lost = threading.Event()
events = []
backend = RedisBackend(cfg["urls"])
lock = Lock(cfg["name"], backend, ttl=cfg["ttl"], auto_renew=True,
            on_lost=lambda _: lost.set(), on_event=lambda e: events.append(e.kind))

def fenced_write(token):
    with open(cfg["store"], "r+") as store:
        count, last = map(int, store.read().split())
        if token <= last:
            return False
        store.seek(0)
        store.write(f"{count + 1} {token}\n")
        store.truncate()
        return True

assert lock.acquire(timeout=10.0)
token = lock.token
report = {"token": token, "first_write": fenced_write(token)}
print("acquired", flush=True)
sys.stdin.readline()                       # paused here; resumed, then told to write
report["late_write"] = fenced_write(token)
report["on_lost"] = lost.wait(10.0)
report["owned"] = lock.owned()
try:
    lock.release()
    report["release"] = "ok"
except LockLostError:
    report["release"] = "LockLostError"
except LockNotOwnedError:
    report["release"] = "LockNotOwnedError"
report["events"] = events
print(json.dumps(report), flush=True)
"""


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.parametrize("n_servers", [1, 3])
def test_holder_paused_past_its_ttl_loses_to_the_next_holder(redis_servers, tmp_path,
                                                             n_servers) -> None:
    servers = redis_servers(n_servers)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    store = tmp_path / "store"
    store.write_text("0 0\n")
    config = {"urls": [s.url for s in servers], "name": "paused", "ttl": 1.0,
              "store": str(store)}
    child = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(config)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=child_env(), cwd=tmp_path, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "acquired", child.stderr.read()  # type: ignore[union-attr]
        first_count, first_token = read_store(store)
        assert first_count == 1
        child.send_signal(signal.SIGSTOP)
        # The renewals stop with the holder: its lease runs out, and this process gets it.
        lock = Lock("paused", backend, ttl=10.0)
        assert lock.acquire(timeout=10.0)
        assert lock.token > first_token
        count, last = read_store(store)
        assert lock.token > last
        store.write_text(f"{count + 1} {lock.token}\n")
        child.send_signal(signal.SIGCONT)
        out, err = child.communicate("write\n", timeout=30)
        assert child.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["token"] == first_token
        assert report["first_write"] is True
        assert report["late_write"] is False          # the fenced store refused the old token
        assert report["on_lost"] is True              # the holder learnt it lost the lock
        assert report["owned"] is False
        assert report["release"] == "LockLostError"
        assert "lost" in report["events"]
        assert read_store(store) == (2, lock.token)
        assert lock.owned()                           # its release did not touch our lease
        lock.release()
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait()
        backend.close()


# -- servers restarted empty ----------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.signals
def test_single_server_restarted_empty_waits_a_ttl_and_tokens_keep_increasing(redis_servers
                                                                               ) -> None:
    (server,) = redis_servers(1)
    ttl = 1.0
    backend = RedisBackend(server.url, max_ttl=ttl)
    backend.initialize()
    lock = Lock("restart", backend, ttl=ttl)
    with lock:
        before = lock.token
    server.kill()
    server.restart()
    assert server.client().get(f"{PREFIX}{{restart}}:fence") is None  # the counter is gone
    assert not lock.acquire(blocking=False)       # restarted empty: no vote for a ttl
    started = time.monotonic()
    assert lock.acquire(timeout=ttl + 5.0)
    assert time.monotonic() - started >= ttl * 0.9
    assert lock.token > before                     # the TIME floor: no token is handed out twice
    lock.release()


@pytest.mark.redis
@pytest.mark.signals
def test_restarted_server_cannot_hand_a_held_lock_to_another(redis_servers) -> None:
    """The holder is granted by two of three servers (the third refuses); one of its two
    restarts empty. Without the restart's quiet period the restarted one and the third would
    form a majority for a second holder while the first still holds the lock."""
    servers = redis_servers(3)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    ttl = 2.0
    servers[2].client().set(f"{PREFIX}{{r}}", "intruder", px=60_000)
    first = Lock("r", backend, ttl=ttl)
    assert first.acquire(blocking=False)
    servers[2].client().delete(f"{PREFIX}{{r}}")
    servers[1].kill()
    servers[1].restart()
    second = Lock("r", backend, ttl=ttl)
    assert not second.acquire(blocking=False)
    assert first.validity() > 0     # (owned() says no: only one of three servers still has it)
    assert second.acquire(timeout=ttl + 5.0)       # once the first lease ran out
    assert not first.owned()
    assert second.token > first.token
    second.release()
    backend.close()


# -- network errors mid-protocol -------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.signals
def test_a_paused_server_times_out_and_counts_as_failed(redis_servers) -> None:
    servers = redis_servers(3)
    backend = RedisBackend([s.url for s in servers], socket_timeout=0.5)
    backend.initialize()
    lock = Lock("p", backend, ttl=3.0)
    servers[0].pause()
    try:
        started = time.monotonic()
        assert lock.acquire(blocking=False)        # two of three answered and granted
        lock.release()
        servers[1].pause()
        with pytest.raises(LockQuorumError) as info:
            lock.acquire(blocking=False)
        assert time.monotonic() - started < 2 * (0.5 * 4 + 1.0) + 2.0
        assert set(info.value.failed) == {servers[0].name, servers[1].name}
        assert leases(servers[2], "p") is None
    finally:
        servers[0].resume()
        servers[1].resume()
    # The paused servers ran the queued scripts on resume: their leases are orphans that run
    # out within a ttl; after that the lock is free again.
    assert lock.acquire(timeout=3.0 + 5.0)
    lock.release()
    backend.close()


@pytest.mark.redis
@pytest.mark.signals
def test_a_paused_single_server_is_a_quorum_error_not_a_hang(redis_servers) -> None:
    (server,) = redis_servers(1)
    backend = RedisBackend(server.url, socket_timeout=0.5)
    backend.initialize()
    lock = Lock("p1", backend, ttl=1.0)
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(LockQuorumError) as info:
            lock.acquire(timeout=1.0)
        assert time.monotonic() - started < 1.0 + 2.0
        assert server.name in str(info.value)
    finally:
        server.resume()
    assert lock.acquire(timeout=1.0 + 5.0)
    lock.release()


def _drive(backend: RedisBackend, steps, between) -> object:  # type: ignore[no-untyped-def]
    """Run the acquire protocol's rounds on `backend`, calling `between()` after the first."""
    round_ = next(steps)
    outcome = backend._round(round_)
    between()
    try:
        while True:
            round_ = steps.send(outcome)
            outcome = backend._round(round_)
    except StopIteration as done:
        return done.value


@pytest.mark.redis
@pytest.mark.signals
def test_servers_killed_between_the_grant_and_the_token_write(redis_servers) -> None:
    """The quorum acquire is two rounds (grant, then the token written back to a majority).
    One server killed between them: still a majority, the lease is held. Two killed: the
    token reaches one server only, so the attempt fails and gives back its last grant."""
    servers = redis_servers(3)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    grant = _drive(backend, acquire_steps(backend._placement, time.monotonic, "k", "h1", 5.0),
                   servers[0].kill)
    assert grant is not None and grant.validity > 0
    assert backend.release("k", "h1")
    servers[0].restart()
    backend.initialize()
    with Lock("k", backend) as lock:
        token = lock.token

    def kill_two() -> None:
        servers[0].kill()
        servers[1].kill()

    grant = _drive(backend, acquire_steps(backend._placement, time.monotonic, "k", "h2", 5.0),
                   kill_two)
    assert grant is None
    assert leases(servers[2], "k") is None
    for server in servers[:2]:
        server.restart()
    backend.initialize()
    with Lock("k", backend) as lock:
        assert lock.token > token
    backend.close()


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.parametrize("n_servers, kill", [(3, 1), (5, 2)])
def test_release_after_a_minority_died_under_the_holder(redis_servers, n_servers, kill) -> None:
    """The holder was granted by a bare majority (the others held a stale lease of a failed
    contender), then a minority of servers died under it. No one else could have reached a
    majority meanwhile, so its release is a plain success, not a LockLostError; and once its
    lease is gone, the next holder gets the lock and a larger token."""
    servers = redis_servers(n_servers)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    majority = n_servers // 2 + 1
    stale = servers[majority:]
    for server in stale:
        server.client().set(f"{PREFIX}{{d}}", "failed-contender", px=60_000)
    lock = Lock("d", backend, ttl=10.0)
    assert lock.acquire(blocking=False)
    for server in stale:
        server.client().delete(f"{PREFIX}{{d}}")
    for server in servers[:kill]:
        server.kill()
    token = lock.token
    lock.release()
    for server in servers[kill:]:
        assert leases(server, "d") is None
    with lock:
        assert lock.token > token
    backend.close()


@pytest.mark.redis
@pytest.mark.signals
def test_renewal_without_a_quorum_reports_failures_then_the_loss(redis_servers) -> None:
    """A majority dies under an auto-renewed lease: every failed renewal is a "quorum_failed"
    event, and when the validity runs out the lease is "lost" (on_lost runs, release raises)."""
    servers = redis_servers(3)
    backend = RedisBackend([s.url for s in servers])
    backend.initialize()
    events: list[LockEvent] = []
    lost = []
    lock = Lock("renew", backend, ttl=1.0, auto_renew=True, on_lost=lost.append,
                on_event=events.append)
    lock.acquire()
    token = lock.token
    servers[0].kill()
    servers[1].kill()
    deadline = time.monotonic() + 1.0 + 5.0
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost == [lock]
    kinds = [e.kind for e in events]
    assert kinds[0] == "acquired" and kinds[-1] == "lost"
    assert "quorum_failed" in kinds
    failures = [e for e in events if e.kind == "quorum_failed"]
    assert all(isinstance(e.error, LockQuorumError) and e.token == token for e in failures)
    assert not lock.owned()
    with pytest.raises(LockError):      # LockLostError: the lease was lost before release
        lock.release()
    backend.close()
