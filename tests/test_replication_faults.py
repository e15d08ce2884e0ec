"""Fault workloads with a checker: writers in threads and in separate processes write unique
values to a shared key space while nodes are killed and come back empty (then repair()), or
are paused and resumed, one at a time. Some faults are chained (still one node down at a time):
a replica misses writes, another comes back empty, and a third is down before the repair(), so
that keys on all three are left with one counted replica and a stale one, where counting the
empty node would read stale data. Every acknowledged write and every read is logged, with
the monotonic time it started and ended (CLOCK_MONOTONIC is one clock for every process on the
machine), and the checker then verifies, from the logs and from every replica read directly:

- no acknowledged write is lost: each key's final version is at least its highest acknowledged
  version (its last acknowledged value, or a later one);
- no read returned a version older than its reader's own last acknowledged write to that key,
  nor older than any write acknowledged (by anyone) before the read began;
- versions only grow: a write acknowledged before another began has the smaller version, and no
  two acknowledged writes share a version; a read or the final state at an acknowledged
  version carries that write's value;
- after a final repair() every replica of every key holds the same version.

The Redis run starts 5 redis-server processes; its writer processes run this file as a script
(``python test_replication_faults.py worker CONFIG``), each with its own store and writer id.
"""

from __future__ import annotations

import bisect
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from replication_checks import check_digests_match_a_full_scan

import ringkit
from ringkit import QuorumError
from ringkit.replication import MemoryNode, RedisNode, ReplicatedStore

KEYS = [f"k{i:03d}" for i in range(200)]
SOCKET_TIMEOUT = 0.3
DOWN_BACKOFF = 0.1

Log = dict[str, Any]


def new_log() -> Log:
    return {"writes": [], "reads": [], "failed_writes": 0, "failed_reads": 0, "errors": []}


def _version(version: Any) -> list[Any] | None:
    return None if version is None else [version.counter, version.writer]


def run_writer(store: ReplicatedStore, writer: str, stop: Callable[[], bool], seed: int,
               log: Log) -> None:
    """Write unique values (``writer:seq``; a few deletes) to random keys and read keys back,
    mostly ones this writer wrote, logging what was acknowledged and what was read. `log` may
    be shared by threads: list.append is atomic."""
    rng = random.Random(seed)
    own: dict[str, list[Any]] = {}          # key -> this writer's last acknowledged version
    seq = 0
    while not stop():
        try:
            if rng.random() < 0.55:
                key = rng.choice(KEYS)
                delete = rng.random() < 0.05
                value = None if delete else f"{writer}:{seq}"
                seq += 1
                started = time.monotonic()
                try:
                    version = store.delete(key) if delete else store.put(key, value.encode())  # type: ignore[union-attr]
                except QuorumError:
                    log["failed_writes"] += 1
                    continue
                ended = time.monotonic()
                own[key] = _version(version)  # type: ignore[assignment]
                log["writes"].append([key, value, own[key], started, ended, writer])
            else:
                key = rng.choice(list(own)) if own and rng.random() < 0.7 else rng.choice(KEYS)
                mine = own.get(key)
                started = time.monotonic()
                try:
                    found, version = store.get_versioned(key)
                except QuorumError:
                    log["failed_reads"] += 1
                    continue
                ended = time.monotonic()
                log["reads"].append([key, None if found is None else found.decode(),
                                     _version(version), started, ended, mine, writer])
        except Exception:  # noqa: BLE001 - anything but a QuorumError is a failure
            log["errors"].append(f"{writer}: {traceback.format_exc()}")


def _key(version: Iterable[Any] | None) -> tuple[int, str]:
    return (-1, "") if version is None else (int(list(version)[0]), str(list(version)[1]))


class Checker:
    """Collects the writers' logs, then checks them against the final state."""

    def __init__(self) -> None:
        self.log = new_log()
        self.faults: Counter[str] = Counter()     # each node or server fault, by kind
        self.chains = 0                            # chained sequences (see the workloads)

    def add(self, log: Log) -> None:
        for field in ("writes", "reads", "errors"):
            self.log[field].extend(log[field])
        for field in ("failed_writes", "failed_reads"):
            self.log[field] += log[field]

    def check(self, final: dict[str, tuple[str | None, Any]],
              replicas: dict[str, list[Any]]) -> dict[str, int]:
        """`final`: each key's (value, version) read after the final repair; `replicas`: the
        version each of its replicas holds, read directly from the nodes."""
        writes = [(w[0], w[1], _key(w[2]), w[3], w[4]) for w in self.log["writes"]]
        reads = [(r[0], r[1], None if r[2] is None else _key(r[2]), r[3], r[4],
                  None if r[5] is None else _key(r[5])) for r in self.log["reads"]]
        by_key: dict[str, list[tuple[float, tuple[int, str]]]] = defaultdict(list)
        value_of: dict[tuple[str, tuple[int, str]], str | None] = {}
        for key, value, version, _, ended in writes:
            by_key[key].append((ended, version))
            value_of[(key, version)] = value
        ends: dict[str, list[float]] = {}
        newest_before: dict[str, list[tuple[int, str]]] = {}     # running max by end time
        for key, acked in by_key.items():
            acked.sort()
            ends[key] = [t for t, _ in acked]
            running, best = [], (-1, "")
            for _, version in acked:
                best = max(best, version)
                running.append(best)
            newest_before[key] = running

        def acked_before(key: str, moment: float) -> tuple[int, str]:
            i = bisect.bisect_left(ends.get(key, []), moment)
            return newest_before[key][i - 1] if i else (-1, "")

        lost = sum(1 for key, _, version, _, _ in writes if _key(final[key][1]) < version)
        out_of_order = sum(1 for key, _, version, started, _ in writes
                           if acked_before(key, started) >= version)
        stale_own = sum(1 for r in reads if r[5] is not None and _key(r[2]) < r[5])
        stale_any = sum(1 for r in reads if _key(r[2]) < acked_before(r[0], r[3]))
        mismatched = sum(1 for r in reads
                         if r[2] is not None and (r[0], r[2]) in value_of
                         and value_of[(r[0], r[2])] != r[1])
        mismatched += sum(1 for key, (value, version) in final.items()
                          if version is not None and (key, _key(version)) in value_of
                          and value_of[(key, _key(version))] != value)
        counts = {
            "writes acknowledged": len(writes),
            "writes refused (QuorumError)": self.log["failed_writes"],
            "reads": len(reads),
            "reads refused (QuorumError)": self.log["failed_reads"],
            "faults injected": sum(self.faults.values()),
            **{f"  {kind}": n for kind, n in sorted(self.faults.items())},
            "  chained (a stale replica, one back empty, another down before repair())":
                self.chains,
            "writes lost": lost,
            "stale reads (own writes)": stale_own,
            "stale reads (any acknowledged write)": stale_any,
            "writes numbered out of order": out_of_order,
            "duplicate versions": len(writes) - len({(w[0], w[2]) for w in writes}),
            "values not matching their version": mismatched,
            "keys with diverging replicas": sum(1 for versions in replicas.values()
                                                if len({_key(v) for v in versions}) != 1),
            "unexpected errors": len(self.log["errors"]),
        }
        return counts

    @staticmethod
    def report(title: str, counts: dict[str, int]) -> None:
        print(f"\n{title}")
        for name, n in counts.items():
            print(f"  {name}: {n}")

    def assert_clean(self, counts: dict[str, int]) -> None:
        assert not self.log["errors"], "\n".join(self.log["errors"][:5])
        for name in ("writes lost", "stale reads (own writes)",
                     "stale reads (any acknowledged write)", "writes numbered out of order",
                     "duplicate versions", "values not matching their version",
                     "keys with diverging replicas", "unexpected errors"):
            assert counts[name] == 0, (name, counts)


def final_state(store: ReplicatedStore, nodes: dict[str, Any]
                ) -> tuple[dict[str, tuple[str | None, Any]], dict[str, list[Any]]]:
    """Each key's (value, version) through a store, and each replica's version read directly."""
    final = {}
    for key in KEYS:
        value, version = store.get_versioned(key)
        final[key] = (None if value is None else value.decode(), version)
    replicas = {}
    for key in KEYS:
        replicas[key] = [None if r is None else r.version
                         for r in (nodes[name].read([key])[1][0]
                                   for name in store.preference_list(key))]
    return final, replicas


def converge(store: ReplicatedStore, nodes: dict[str, Any], attempts: int = 5
             ) -> tuple[dict[str, tuple[str | None, Any]], dict[str, list[Any]]]:
    """repair() until every replica of every key holds one version (a socket timeout on a busy
    machine can leave a replica for the next pass), then the final state."""
    for _ in range(attempts):
        store.repair()
        final, replicas = final_state(store, nodes)
        if all(len({_key(v) for v in versions}) == 1 for versions in replicas.values()):
            break
    return final, replicas


def repair_until_up(store: ReplicatedStore, name: str, attempts: int = 20) -> None:
    for _ in range(attempts):
        store.repair()
        if store.status()[name] == "up":
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} is still {store.status()[name]} after {attempts} repairs")


# -- memory nodes ---------------------------------------------------------------------------------


def test_fault_workload_on_memory_nodes() -> None:
    rng = random.Random(11)
    nodes = {f"m{i}": MemoryNode(f"m{i}") for i in range(5)}

    def make_store(writer_id: str) -> ReplicatedStore:
        return ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2,
                               writer_id=writer_id, down_backoff=0.002)

    injector = make_store("f0")
    stores = [make_store(f"a{i}") for i in range(4)]
    log = new_log()
    done = threading.Event()
    threads = [threading.Thread(target=run_writer,
                                args=(stores[i % 4], f"a{i % 4}.{i}", done.is_set, i, log))
               for i in range(12)]
    checker = Checker()
    for t in threads:
        t.start()
    try:
        for step in range(40):
            time.sleep(0.03)
            name = rng.choice(list(nodes))
            if step % 3 == 0:
                nodes[name].kill()
                time.sleep(rng.uniform(0.01, 0.06))
                nodes[name].revive()
                checker.faults["kill(), revive() with its data"] += 1
                continue
            if step % 3 == 1:
                nodes[name].kill()
                time.sleep(rng.uniform(0.01, 0.06))
                nodes[name].revive(empty=True)
                checker.faults["kill(), revive(empty=True), repair()"] += 1
            else:
                # Still one node down at a time, but chained so that the empty node matters:
                # `stale` misses writes, `name` comes back empty, and before repair() `other`
                # is down. Keys on all three have one counted replica left, and a stale one:
                # they must refuse, not read the empty and the stale replica.
                stale, other = rng.sample([n for n in nodes if n != name], 2)
                nodes[stale].kill()
                time.sleep(0.1)
                nodes[stale].revive()
                nodes[name].kill()
                nodes[name].revive(empty=True)
                nodes[other].kill()
                time.sleep(0.05)
                nodes[other].revive()
                checker.faults["kill(), revive() with its data"] += 2
                checker.faults["kill(), revive(empty=True), repair()"] += 1
                checker.chains += 1
            repair_until_up(injector, name)
    finally:
        done.set()
        for t in threads:
            t.join()
    checker.add(log)
    counts = checker.check(*converge(injector, nodes))
    Checker.report("replication fault workload, memory nodes:", counts)
    checker.assert_clean(counts)
    # The digests repair compares equal a full scan of what each node holds.
    assert check_digests_match_a_full_scan(nodes) > 0
    assert counts["writes acknowledged"] > 1000 and counts["reads"] > 500
    assert counts["faults injected"] == 66 and checker.chains == 13


# -- real servers ---------------------------------------------------------------------------------


def redis_store(urls: dict[str, str], writer_id: str) -> tuple[ReplicatedStore, dict[str, Any]]:
    nodes = {name: RedisNode(url, socket_timeout=SOCKET_TIMEOUT) for name, url in urls.items()}
    store = ReplicatedStore(nodes, replicas=3, write_quorum=2, read_quorum=2,
                            writer_id=writer_id, down_backoff=DOWN_BACKOFF)
    return store, nodes


def worker_main(config_path: str) -> int:
    """A writer process: its own store (its own writer id) and threads, until the stop file
    appears; its log goes to a JSON file."""
    config = json.loads(Path(config_path).read_text())
    store, _ = redis_store(config["urls"], config["writer_id"])
    stop_file = Path(config["stop"])
    deadline = time.monotonic() + config["max_seconds"]

    def stop() -> bool:
        return stop_file.exists() or time.monotonic() > deadline

    log = new_log()
    threads = [threading.Thread(target=run_writer,
                                args=(store, f"{config['writer_id']}.{j}", stop,
                                      config["seed"] * 100 + j, log))
               for j in range(config["threads"])]
    for t in threads:
        t.start()
    Path(config["ready"]).touch()
    for t in threads:
        t.join()
    Path(config["out"]).write_text(json.dumps(log))
    return 0


def start_worker(tmp: Path, urls: dict[str, str], writer_id: str, seed: int
                 ) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    files = {name: str(tmp / f"{writer_id}.{name}") for name in ("ready", "out", "log")}
    config = {"urls": urls, "writer_id": writer_id, "seed": seed, "threads": 2,
              "stop": str(tmp / "stop"), "max_seconds": 120.0, **files}
    config_path = tmp / f"{writer_id}.json"
    config_path.write_text(json.dumps(config))
    # The worker imports the very ringkit this test imported (installed or from src/).
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(ringkit.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    with open(files["log"], "wb") as output:
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker",
                                    str(config_path)], stdout=output, stderr=subprocess.STDOUT,
                                   env=env)
    return process, files


@pytest.mark.redis
@pytest.mark.signals
def test_fault_workload_on_redis_servers(redis_servers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(5)
    urls = {f"r{i}": server.url for i, server in enumerate(servers)}
    injector, nodes = redis_store(urls, "f0")
    assert sorted(injector.initialize()) == sorted(urls)
    local, _ = redis_store(urls, "a0")
    checker = Checker()
    workers = [start_worker(tmp_path, urls, f"b{i}", seed=i + 1) for i in range(2)]
    log = new_log()
    done = threading.Event()
    threads = [threading.Thread(target=run_writer, args=(local, f"a0.{j}", done.is_set, j, log))
               for j in range(3)]
    try:
        deadline = time.monotonic() + 60.0
        while not all(Path(files["ready"]).exists() for _, files in workers):
            for process, files in workers:
                assert process.poll() is None, Path(files["log"]).read_text()
            assert time.monotonic() < deadline, "writer processes did not start"
            time.sleep(0.05)
        for t in threads:
            t.start()
        time.sleep(1.0)
        # One fault at a time, each on another server: kill -9 and restart empty (then
        # repair()), or SIGSTOP and SIGCONT.
        # A third kind chains them, still one server down at a time: one server misses writes
        # (paused), another comes back empty, and a third is paused before the repair(). Keys
        # on all three have one counted replica left and a stale one: they must refuse rather
        # than read the empty and the stale replica.
        for step, index in enumerate([1, 3, 0, 4, 2, 1]):
            server, name = servers[index], f"r{index}"
            if step % 2 == 0:
                chained = step in (2, 4)
                if chained:
                    servers[(index + 1) % 5].pause()
                    time.sleep(0.8)
                    servers[(index + 1) % 5].resume()
                server.kill()                         # SIGKILL; returns once the pid is gone
                time.sleep(0.05 if chained else 0.7)
                server.restart()                      # empty, on the same port
                if chained:
                    servers[(index + 2) % 5].pause()
                    time.sleep(0.8)
                    servers[(index + 2) % 5].resume()
                    checker.faults["SIGSTOP, SIGCONT"] += 2
                    checker.chains += 1
                else:
                    time.sleep(0.3)
                checker.faults["SIGKILL, restarted empty, repair()"] += 1
                repair_until_up(injector, name)
            else:
                server.pause()
                time.sleep(1.0)
                server.resume()
                checker.faults["SIGSTOP, SIGCONT"] += 1
            time.sleep(0.8)
    finally:
        done.set()
        (tmp_path / "stop").touch()
        for server in servers:
            if server.paused:
                server.resume()
        for t in threads:
            t.join()
        for process, _ in workers:
            try:
                process.wait(60.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for process, files in workers:
        assert process.returncode == 0, Path(files["log"]).read_text()
        checker.add(json.loads(Path(files["out"]).read_text()))
    checker.add(log)
    counts = checker.check(*converge(injector, nodes))
    Checker.report("replication fault workload, 5 redis-server processes "
                   "(3 threads here, 2 writer processes x 2 threads):", counts)
    checker.assert_clean(counts)
    # The digests repair compares equal a full scan of what each node holds.
    assert check_digests_match_a_full_scan(nodes) > 0
    assert counts["writes acknowledged"] > 500 and counts["reads"] > 300
    assert counts["faults injected"] == 10 and checker.chains == 2
    # Both processes' writers and this process's threads were acknowledged.
    writers = {w[5].split(".")[0] for w in checker.log["writes"]}
    assert writers == {"a0", "b0", "b1"}


# -- the partition nemesis ------------------------------------------------------------------------

NEMESIS_SECONDS = float(os.environ.get("RINGKIT_NEMESIS_SECONDS", "25"))
NEMESIS_SEED = int(os.environ.get("RINGKIT_NEMESIS_SEED",
                                  str(random.SystemRandom().randrange(2**31))))


class ReplicationNemesis:
    """A randomised schedule over 5 servers and every writer's links to them: SIGKILL and a
    restart empty (refilled by repair() before the next loss of data: two nodes that lose the
    only copies of a write are beyond what replicas=3, W=2 tolerates), restart empty at once,
    SIGSTOP, and per-link blackholes (one direction or both), delays and resets."""

    def __init__(self, rng: random.Random, servers: list[Any], links: list[Any],
                 injector: ReplicatedStore, checker: Checker) -> None:
        self.rng = rng
        self.servers = servers
        self.links = links
        self.injector = injector
        self.checker = checker

    def step(self) -> None:
        rng, faults = self.rng, self.checker.faults
        kind = rng.choice(["kill", "restart", "chain", "chain", "pause", "pause", "blackhole",
                           "blackhole", "delay", "reset"])
        index = rng.randrange(len(self.servers))
        server = self.servers[index]
        if kind in ("kill", "restart"):
            server.kill()
            if kind == "kill":
                time.sleep(rng.uniform(0.05, 0.6))
            server.restart()
            faults["SIGKILL, restart empty, repair()" if kind == "kill"
                   else "restart empty at once, repair()"] += 1
            time.sleep(rng.uniform(0.0, 1.0))       # in use, back empty, before its repair
            repair_until_up(self.injector, f"r{index}")
        elif kind == "chain":
            # Still one node down at a time, but chained so that the empty node matters: one
            # replica misses writes, another comes back empty, and before repair() a third is
            # away. Keys on all three have one counted replica left and a stale one: they must
            # refuse, not read the empty and the stale replica.
            stale, other = rng.sample([s for i, s in enumerate(self.servers) if i != index], 2)
            stale.pause()
            time.sleep(rng.uniform(0.3, 1.0))
            stale.resume()
            server.kill()
            server.restart()
            other.pause()
            time.sleep(rng.uniform(0.3, 1.0))
            other.resume()
            faults["SIGSTOP, SIGCONT"] += 2
            faults["SIGKILL, restart empty, repair()"] += 1
            self.checker.chains += 1
            repair_until_up(self.injector, f"r{index}")
        elif kind == "pause":
            server.pause()
            time.sleep(rng.uniform(0.1, 1.0))
            server.resume()
            faults["SIGSTOP, SIGCONT"] += 1
        elif kind in ("blackhole", "delay"):
            chosen = rng.sample(self.links, rng.randint(1, max(1, len(self.links) // 4)))
            direction = rng.choice(["up", "down", "both"])
            for link in chosen:
                if kind == "blackhole":
                    link.blackhole(direction)
                else:
                    link.delay(rng.uniform(5, 500), direction)
            time.sleep(rng.uniform(0.1, 1.0))
            for link in chosen:
                link.heal()
            faults[f"{kind} {direction} (links)"] += len(chosen)
        else:
            link = rng.choice(self.links)
            link.reset()
            time.sleep(rng.uniform(0.0, 0.2))
            link.heal()
            faults["reset (link)"] += 1
        time.sleep(rng.uniform(0.05, 0.3))

    def heal(self) -> None:
        for server in self.servers:
            if server.paused:
                server.resume()
        for link in self.links:
            link.heal()


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.slow
def test_replication_history_under_the_nemesis(redis_servers, proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Writers in two processes and this one, each through its own proxied links, under the
    random schedule above; then the checker over the whole history (see the module docs)."""
    seed = NEMESIS_SEED
    rng = random.Random(seed)
    servers = redis_servers(5)
    urls = {f"r{i}": server.url for i, server in enumerate(servers)}
    injector, nodes = redis_store(urls, "f0")
    assert sorted(injector.initialize()) == sorted(urls)
    links: list[Any] = []

    def proxied() -> dict[str, str]:
        mine = {name: proxy.link(server.port) for name, server in zip(urls, servers)}
        links.extend(mine.values())
        return {name: link.url for name, link in mine.items()}

    local, _ = redis_store(proxied(), "a0")
    checker = Checker()
    workers = [start_worker(tmp_path, proxied(), f"b{i}", seed=seed + i) for i in range(2)]
    log = new_log()
    done = threading.Event()
    threads = [threading.Thread(target=run_writer,
                                args=(local, f"a0.{j}", done.is_set, seed * 10 + j, log))
               for j in range(2)]
    nemesis = ReplicationNemesis(rng, servers, links, injector, checker)
    try:
        deadline = time.monotonic() + 60.0
        while not all(Path(files["ready"]).exists() for _, files in workers):
            for process, files in workers:
                assert process.poll() is None, Path(files["log"]).read_text()
            assert time.monotonic() < deadline, "writer processes did not start"
            time.sleep(0.05)
        for t in threads:
            t.start()
        end = time.monotonic() + NEMESIS_SECONDS
        while time.monotonic() < end:
            nemesis.step()
    finally:
        nemesis.heal()
        done.set()
        (tmp_path / "stop").touch()
        for t in threads:
            t.join()
        for process, _ in workers:
            try:
                process.wait(60.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for process, files in workers:
        assert process.returncode == 0, Path(files["log"]).read_text()
        checker.add(json.loads(Path(files["out"]).read_text()))
    checker.add(log)
    counts = checker.check(*converge(injector, nodes))
    Checker.report(f"replication nemesis, 5 redis-servers, proxied links, seed {seed} "
                   f"(replay with RINGKIT_NEMESIS_SEED={seed}):", counts)
    checker.assert_clean(counts)
    # The digests repair compares equal a full scan of what each node holds.
    assert check_digests_match_a_full_scan(nodes) > 0
    assert counts["writes acknowledged"] > 200 and counts["reads"] > 100
    assert counts["faults injected"] >= 10


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit("usage: test_replication_faults.py worker CONFIG")
