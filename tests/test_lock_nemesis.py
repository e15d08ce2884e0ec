"""Locks under a nemesis, Jepsen style: client processes take one lock over and over while a
randomised schedule kills servers (SIGKILL, then a restart empty), pauses them (SIGSTOP),
restarts them empty at once, pauses client processes past their lease, and partitions single
client->server links through a proxy (blackhole one direction or both, delay, reset).

Every holder that was told it holds logs ``(token, start, end)``: start when acquire()
returned, end when it began its release, clipped to the validity it believed it had (the
lease's deadline on its own monotonic clock; CLOCK_MONOTONIC is one clock for every process
on the machine). The checker then reads the whole history:

- no two holders' intervals overlap;
- tokens strictly increase with start time.

The schedule is drawn from a seed, printed with the counts (and on failure): replay a run with
``RINGKIT_NEMESIS_SEED=<seed>``; ``RINGKIT_NEMESIS_SECONDS`` makes it longer.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import ringkit

SECONDS = float(os.environ.get("RINGKIT_NEMESIS_SECONDS", "25"))
SEED = int(os.environ.get("RINGKIT_NEMESIS_SEED", str(random.SystemRandom().randrange(2**31))))
MAX_TTL = 1.5          # every client agrees; a server restarted empty is quiet this long

# A client process: takes the lock again and again until the stop file appears, logging every
# interval it believed it held the lock, and what it saw go wrong.
CLIENT = r"""
import json, os, random, sys, time
from ringkit import LockError
from ringkit.lock import Lock, RedisBackend

cfg = json.loads(sys.argv[1])
rng = random.Random(cfg["seed"])
backend = RedisBackend(cfg["urls"], max_ttl=cfg["max_ttl"], socket_timeout=cfg["timeout"])
held, errors = [], {"quorum": 0, "lost": 0, "other": []}
out = open(cfg["out"], "w")
open(cfg["ready"], "w").close()
while not os.path.exists(cfg["stop"]):
    ttl = rng.uniform(0.2, cfg["max_ttl"])
    lock = Lock(cfg["name"], backend, ttl=ttl, retry_interval=0.02)
    try:
        if not lock.acquire(timeout=rng.uniform(0.0, 1.0)):
            continue
    except LockError:
        errors["quorum"] += 1
        continue
    except Exception as exc:
        errors["other"].append(repr(exc))
        continue
    start = time.monotonic()
    believed = start + lock.validity()
    token = lock.token
    hold = rng.uniform(0.0, ttl * 0.8)
    end_by = start + hold
    while time.monotonic() < end_by:
        time.sleep(min(0.01, max(0.0, end_by - time.monotonic())))
        if rng.random() < 0.05:
            try:
                lock.extend(ttl)
                believed = time.monotonic() + lock.validity()
            except LockError:
                break
    end = min(time.monotonic(), believed)
    out.write(json.dumps([token, start, end]) + "\n")
    out.flush()
    try:
        lock.release()
    except LockError:
        errors["lost"] += 1
    except Exception as exc:
        errors["other"].append(repr(exc))
out.close()
backend.close()
with open(cfg["errors"], "w") as f:
    json.dump(errors, f)
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(ringkit.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    env.pop("PYTHONSTARTUP", None)
    return env


def check_history(intervals: list[tuple[int, float, float]]) -> dict[str, int]:
    """The checker: intervals sorted by start must not overlap, and their tokens must
    strictly increase."""
    ordered = sorted(intervals, key=lambda i: (i[1], i[2]))
    overlaps = 0
    out_of_order = 0
    latest_end = -1.0
    previous_token = -1
    for token, start, end in ordered:
        if start < latest_end:
            overlaps += 1
        latest_end = max(latest_end, end)
        if token <= previous_token:
            out_of_order += 1
        previous_token = token
    return {"holders": len(ordered), "overlaps": overlaps,
            "tokens out of order": out_of_order,
            "distinct tokens": len({i[0] for i in ordered})}


class Nemesis:
    """The randomised fault schedule over the servers, the client processes and the links."""

    def __init__(self, rng: random.Random, servers: list[Any], links: list[Any],
                 clients: list[subprocess.Popen[bytes]]) -> None:
        self.rng = rng
        self.servers = servers
        self.links = links
        self.clients = clients
        self.faults: Counter[str] = Counter()

    def step(self) -> None:
        rng = self.rng
        kind = rng.choice(["kill", "pause", "restart", "blackhole", "blackhole", "delay",
                           "reset", "pause-client"])
        if kind == "kill":
            server = rng.choice(self.servers)
            server.kill()
            time.sleep(rng.uniform(0.1, 0.8))
            server.restart()
            self.faults["SIGKILL, restart empty"] += 1
        elif kind == "pause":
            server = rng.choice(self.servers)
            server.pause()
            time.sleep(rng.uniform(0.1, 1.2))
            server.resume()
            self.faults["SIGSTOP, SIGCONT (server)"] += 1
        elif kind == "restart":
            server = rng.choice(self.servers)
            server.kill()
            server.restart()
            self.faults["restart empty at once"] += 1
        elif kind == "blackhole":
            chosen = rng.sample(self.links, rng.randint(1, max(1, len(self.links) // 3)))
            direction = rng.choice(["up", "down", "both"])
            for link in chosen:
                link.blackhole(direction)
            time.sleep(rng.uniform(0.1, 1.2))
            for link in chosen:
                link.heal()
            self.faults[f"blackhole {direction}"] += len(chosen)
        elif kind == "delay":
            chosen = rng.sample(self.links, rng.randint(1, max(1, len(self.links) // 3)))
            direction = rng.choice(["up", "down", "both"])
            for link in chosen:
                link.delay(rng.uniform(5, 400), direction)
            time.sleep(rng.uniform(0.2, 1.2))
            for link in chosen:
                link.heal()
            self.faults[f"delay {direction}"] += len(chosen)
        elif kind == "reset":
            link = rng.choice(self.links)
            link.reset()
            time.sleep(rng.uniform(0.0, 0.3))
            link.heal()
            self.faults["reset"] += 1
        else:
            client = rng.choice(self.clients)
            if client.poll() is None:
                client.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.2, MAX_TTL * 1.5))
                client.send_signal(signal.SIGCONT)
                self.faults["SIGSTOP, SIGCONT (client past its lease)"] += 1
        time.sleep(rng.uniform(0.05, 0.4))

    def heal(self) -> None:
        for server in self.servers:
            if server.paused:
                server.resume()
        for link in self.links:
            link.heal()


def run_workload(tmp_path: Path, redis_servers, proxy, *, n_servers: int,  # type: ignore[no-untyped-def]
                 n_clients: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    servers = redis_servers(n_servers)
    setup = ringkit.lock.RedisBackend([s.url for s in servers], max_ttl=MAX_TTL)
    setup.initialize()
    setup.close()
    links = []
    clients = []
    stop = tmp_path / "stop"
    for c in range(n_clients):
        mine = [proxy.link(s.port) for s in servers]
        links += mine
        files = {k: str(tmp_path / f"client{c}.{k}") for k in ("out", "errors", "ready")}
        config = {"urls": [link.url for link in mine], "name": "nemesis", "max_ttl": MAX_TTL,
                  "timeout": 0.25, "seed": seed * 100 + c, "stop": str(stop), **files}
        clients.append((subprocess.Popen([sys.executable, "-c", CLIENT, json.dumps(config)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         env=child_env(), cwd=tmp_path), files))
    nemesis = Nemesis(rng, servers, links, [p for p, _ in clients])
    try:
        deadline = time.monotonic() + 60.0
        while not all(Path(f["ready"]).exists() for _, f in clients):
            for process, _ in clients:
                assert process.poll() is None, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "client processes did not start"
            time.sleep(0.05)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            nemesis.step()
    finally:
        nemesis.heal()
        for process, _ in clients:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        stop.touch()
        for process, _ in clients:
            try:
                process.wait(60.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    intervals: list[tuple[int, float, float]] = []
    errors: Counter[str] = Counter()
    unexpected: list[str] = []
    for process, files in clients:
        assert process.returncode == 0, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        for line in Path(files["out"]).read_text().splitlines():
            token, start, end_ = json.loads(line)
            intervals.append((int(token), float(start), float(end_)))
        seen = json.loads(Path(files["errors"]).read_text())
        errors["acquires refused (quorum error)"] += seen["quorum"]
        errors["releases after the lease was lost"] += seen["lost"]
        unexpected += seen["other"]
    counts = check_history(intervals)
    counts.update(errors)
    counts["faults injected"] = sum(nemesis.faults.values())
    counts.update({f"  {k}": v for k, v in sorted(nemesis.faults.items())})
    counts["unexpected errors"] = len(unexpected)
    counts["seed"] = seed
    counts["_unexpected"] = unexpected[:5]  # type: ignore[assignment]
    return counts


@pytest.mark.redis
@pytest.mark.signals
@pytest.mark.slow
@pytest.mark.parametrize("n_servers", [3, 5])
def test_lock_history_under_the_nemesis(tmp_path, redis_servers, proxy, n_servers) -> None:  # type: ignore[no-untyped-def]
    seed = SEED + n_servers
    counts = run_workload(tmp_path, redis_servers, proxy, n_servers=n_servers, n_clients=4,
                          seconds=SECONDS, seed=seed)
    print(f"\nlock nemesis, {n_servers} redis-servers, 4 client processes, seed {seed}:")
    for name, value in counts.items():
        if not name.startswith("_"):
            print(f"  {name}: {value}")
    where = f"(replay with RINGKIT_NEMESIS_SEED={seed - n_servers})"
    assert counts["overlaps"] == 0, f"two holders at once {where}: {counts}"
    assert counts["tokens out of order"] == 0, f"tokens not increasing {where}: {counts}"
    assert counts["unexpected errors"] == 0, f"{counts['_unexpected']} {where}"
    assert counts["holders"] >= 20, f"too little progress to check anything {where}: {counts}"
    assert counts["faults injected"] >= 10
