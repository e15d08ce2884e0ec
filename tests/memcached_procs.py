"""Real ``memcached`` and ``nutcracker`` (twemproxy) processes for the compat-model tests.

Like tests/redis_procs.py: every process runs in the foreground under ``subprocess.Popen``, so
the test holds its pid; it is stopped by that pid (SIGKILL, then wait until the pid is gone), and
whatever is still running when the interpreter exits is killed by an exit hook. Nothing here
imports ringkit: the compat oracles must work while the Cython core is being rebuilt.

    servers = start_memcached(3, tmp_path)                  # 127.0.0.1:<free port> each
    servers = start_memcached(3, tmp_path, alias_net=net)   # also <net>.<i>:11211 (same process)
    keys = servers[0].keys()                                # every key it holds (metadump)
    set_keys(("127.0.0.1", port), [b"a", b"b"])             # raw text-protocol sets, pipelined
    proxy = start_nutcracker({"alpha": {...pool...}}, tmp_path)
    proxy = start_nutcracker_on_free_ports({"alpha": {...}})  # "listen:" chosen (and retried)
    proxy.pool_address("alpha")                             # ("127.0.0.1", port)
    stop_all(servers + [proxy])

A memcached is started as ``memcached -u nobody -U 0 -t 1 -l 127.0.0.1:PORT[,ALIAS:11211]``
with ``-o no_lru_maintainer,lru_crawler_sleep=0``: without the LRU maintainer no item moves between
the hot/warm/cold queues while ``lru_crawler metadump all`` walks them (a moving item could be
missed or seen twice), and without the crawler's per-item sleep a dump of thousands of keys takes
milliseconds. A memcached can also listen on a unix socket only (``unix_socket=True``).

Keys read back through metadump are URL-decoded bytes, exactly as they were sent.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MemcachedProc", "NutcrackerProc", "start_memcached", "start_nutcracker", "stop_all",
    "free_port", "free_alias_net", "set_keys", "dump_keys", "memcached_binary",
    "nutcracker_binary", "Address", "free_ports", "nutcracker_yaml",
    "start_nutcracker_on_free_ports",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 11211
START_TIMEOUT = 10.0     # seconds for a new process to answer
STOP_TIMEOUT = 10.0      # seconds for a signalled process to be gone
IO_TIMEOUT = 20.0        # seconds for one socket operation

#: (host, port) for TCP, or a filesystem path for a unix socket.
Address = tuple[str, int] | str

_LIVE: dict[int, subprocess.Popen[bytes]] = {}   # pid -> process, for the exit hook


STRICT = os.environ.get("RINGKIT_STRICT", "") not in ("", "0")


def missing(reason: str) -> None:
    """Something a test needs is not there: a failure under RINGKIT_STRICT=1 (as CI runs, so CI
    never passes by skipping), a skip otherwise."""
    import pytest

    if STRICT:
        pytest.fail(f"RINGKIT_STRICT=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_program(name: str) -> None:
    """memcached or nutcracker is installed, else missing()."""
    try:
        {"memcached": memcached_binary, "nutcracker": nutcracker_binary}[name]()
    except RuntimeError as exc:
        missing(str(exc))


def memcached_binary() -> str:
    path = shutil.which("memcached") or ("/usr/bin/memcached"
                                         if os.path.exists("/usr/bin/memcached") else None)
    if path is None:
        raise RuntimeError("memcached is not installed (Debian: apt-get install memcached)")
    return path


def nutcracker_binary() -> str:
    path = shutil.which("nutcracker") or ("/usr/sbin/nutcracker"
                                          if os.path.exists("/usr/sbin/nutcracker") else None)
    if path is None:
        raise RuntimeError("nutcracker is not installed (Debian: apt-get install nutcracker)")
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct free TCP ports: every socket is held until all are chosen."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_alias_net(count: int, seed: int | None = None) -> str:
    """A loopback /24, "127.A.B", whose addresses .1 .. .count can all bind port 11211 now.

    Every 127.0.0.0/8 address is local on Linux, so servers on the memcached default port can
    be told apart by address; the net is drawn at random to stay clear of anything else on the
    machine that uses port 11211.
    """
    import random

    rng = random.Random(seed)
    for _ in range(50):
        net = f"127.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
        if all(_can_bind(f"{net}.{i}", DEFAULT_PORT) for i in range(1, count + 1)):
            return net
    raise RuntimeError("no loopback /24 with port 11211 free on all of its first "
                       f"{count} addresses")


# -- raw memcached text protocol --------------------------------------------------------------


def _connect(address: Address, timeout: float = IO_TIMEOUT) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection(address, timeout=timeout)


def _answers(address: Address) -> bool:
    try:
        with _connect(address, timeout=0.25) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION ")
    except OSError:
        return False


def _accepts(address: Address) -> bool:
    try:
        with _connect(address, timeout=0.25):
            return True
    except OSError:
        return False


def _recv_until(sock: socket.socket, buf: bytearray, terminator: bytes) -> None:
    while not buf.endswith(terminator):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"connection closed before {terminator!r}: {bytes(buf[-200:])!r}")
        buf += chunk


def dump_keys(address: Address, attempts: int = 50) -> list[bytes]:
    """Every key the memcached at `address` holds, via ``lru_crawler metadump all``.

    The dump is one line per item, ``key=<url-encoded key> exp=... la=... ...``, ended by
    ``END``; a crawler already running answers ``BUSY ...`` and the dump is retried.
    """
    for _ in range(attempts):
        with _connect(address) as sock:
            sock.sendall(b"lru_crawler metadump all\r\n")
            buf = bytearray()
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError(f"{address}: connection closed during metadump")
                buf += chunk
                if buf.startswith(b"BUSY") or buf.startswith(b"ERROR") or \
                        buf.startswith(b"CLIENT_ERROR") or buf.startswith(b"SERVER_ERROR"):
                    _recv_until(sock, buf, b"\r\n")
                    break
                if buf == b"END\r\n" or buf.endswith(b"\nEND\r\n"):
                    break
        if buf.startswith(b"BUSY"):
            time.sleep(0.05)
            continue
        if not buf.endswith(b"END\r\n"):
            raise RuntimeError(f"{address}: unexpected metadump answer {bytes(buf[:200])!r}")
        keys: list[bytes] = []
        for line in bytes(buf[:-len(b"END\r\n")]).split(b"\n"):
            if not line:
                continue
            field = line.split(b" ", 1)[0]
            if not field.startswith(b"key="):
                raise RuntimeError(f"{address}: unexpected metadump line {line[:200]!r}")
            keys.append(urllib.parse.unquote_to_bytes(field[4:]))
        return keys
    raise RuntimeError(f"{address}: lru_crawler stayed busy")


def set_keys(address: Address, keys: Sequence[bytes], value: bytes = b"1",
             batch: int = 512) -> None:
    """``set`` every key (bytes, no space/CR/LF/NUL, at most 250 bytes) on the memcached or
    nutcracker at `address`, pipelined in batches; raises unless every reply is STORED."""
    header_tail = b" 0 0 %d\r\n" % len(value) + value + b"\r\n"
    with _connect(address) as sock:
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            for key in chunk:
                if not key or len(key) > 250 or any(c in key for c in b" \r\n\x00"):
                    raise ValueError(f"key not valid in the memcached text protocol: {key!r}")
            sock.sendall(b"".join(b"set " + key + header_tail for key in chunk))
            expected = len(chunk)
            buf = bytearray()
            while buf.count(b"\r\n") < expected:
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError(f"{address}: connection closed after "
                                          f"{buf.count(b'STORED')} of {expected} replies")
                buf += data
            replies = bytes(buf).split(b"\r\n")[:expected]
            bad = [(k, r) for k, r in zip(chunk, replies) if r != b"STORED"]
            if bad:
                raise RuntimeError(f"{address}: set failed for {len(bad)} keys, "
                                   f"first {bad[0][0]!r}: {bad[0][1]!r}")


# -- processes --------------------------------------------------------------------------------


class _Proc:
    process: subprocess.Popen[bytes] | None = None
    log: Path

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, command: list[str], cwd: Path, nofile: int | None = None) -> None:
        import resource  # POSIX only: imported here so that the module loads anywhere

        def limits() -> None:  # pragma: no cover - runs in the child
            if nofile is not None:
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                want = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

        handle = open(self.log, "ab")
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle,
                                       stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=limits)
        finally:
            handle.close()
        self.process = process
        _LIVE[process.pid] = process

    def _wait_ready(self, ready: Any, what: str) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if self.process.poll() is not None:
                _LIVE.pop(self.process.pid, None)
                text = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"{what} exited with {self.process.returncode}: "
                                   f"{text[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{what} did not answer within {START_TIMEOUT} s")
            time.sleep(0.005)

    def kill(self, sig: int = getattr(signal, "SIGKILL", signal.SIGTERM)) -> None:
        """Send `sig` and wait until the pid is gone."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        _LIVE.pop(process.pid, None)


class MemcachedProc(_Proc):
    """One memcached on 127.0.0.1:`port` (and `alias`:11211 when given), or on a unix socket."""

    def __init__(self, workdir: Path, port: int | None = None, alias: str | None = None,
                 unix_socket: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port
        self.alias = alias
        self.socket_path: str | None = None
        self._socket_dir: str | None = None
        if unix_socket:
            # memcached drops to "nobody" before it binds, and a unix socket path is short
            # (108 bytes): a fresh directory straight under the temp dir, open to everyone
            self._socket_dir = tempfile.mkdtemp(prefix="rk-mc-")
            os.chmod(self._socket_dir, 0o777)
            self.socket_path = os.path.join(self._socket_dir, "mc.sock")
        self.log = self.workdir / "memcached.log"

    @property
    def address(self) -> Address:
        """Where the tests read it: (127.0.0.1, port), or the unix socket path."""
        if self.socket_path is not None:
            return self.socket_path
        assert self.port is not None
        return (self.host, self.port)

    @property
    def alias_address(self) -> tuple[str, int] | None:
        return None if self.alias is None else (self.alias, DEFAULT_PORT)

    def start(self) -> MemcachedProc:
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        command = [memcached_binary(), "-u", "nobody", "-U", "0", "-t", "1", "-m", "64",
                   "-c", "4096", "-o", "no_lru_maintainer,lru_crawler_sleep=0"]
        if self.socket_path is not None:
            command += ["-s", self.socket_path, "-a", "0777"]
        else:
            assert self.port is not None
            listen = f"{self.host}:{self.port}"
            if self.alias is not None:
                listen += f",{self.alias}:{DEFAULT_PORT}"
            command += ["-p", str(self.port), "-l", listen]
        self._spawn(command, self.workdir)
        addresses = [self.address] + ([self.alias_address] if self.alias else [])
        self._wait_ready(lambda: all(_answers(a) for a in addresses), repr(self))
        return self

    def kill(self, sig: int = getattr(signal, "SIGKILL", signal.SIGTERM)) -> None:
        super().kill(sig)
        if self._socket_dir is not None and not self.running:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def keys(self) -> list[bytes]:
        """Every key this server holds (metadump; URL-decoded bytes)."""
        return dump_keys(self.address)

    def __repr__(self) -> str:
        where = self.socket_path or f"{self.host}:{self.port}"
        if self.alias:
            where += f"+{self.alias}:{DEFAULT_PORT}"
        state = "running" if self.running else "stopped"
        return f"<MemcachedProc {where} pid={self.pid} {state}>"


def start_memcached(n: int, workdir: Path | str | None = None, *, alias_net: str | None = None,
                    unix_socket: bool = False) -> list[MemcachedProc]:
    """Start `n` empty memcached servers on free ports (server i, from 1, also on
    `alias_net`.i:11211 when `alias_net` is given; or each on its own unix socket)."""
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ringkit-mc-"))
    servers: list[MemcachedProc] = []
    try:
        for i in range(1, n + 1):
            alias = None if alias_net is None else f"{alias_net}.{i}"
            for attempt in range(5):
                if unix_socket:
                    proc = MemcachedProc(base / f"memcached-unix-{i}", unix_socket=True)
                else:
                    port = free_port()
                    proc = MemcachedProc(base / f"memcached-{port}", port=port, alias=alias)
                try:
                    servers.append(proc.start())
                    break
                except RuntimeError:
                    if attempt == 4:
                        raise
    except BaseException:
        stop_all(servers)
        raise
    return servers


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string is a YAML double-quoted scalar (names and specs here are ASCII).
    return json.dumps(str(value), ensure_ascii=True)


def nutcracker_yaml(pools: Mapping[str, Mapping[str, Any]]) -> str:
    """The YAML text of a nutcracker configuration: {pool name: {directive: value}};
    ``servers`` is a list of "host:port:weight [name]" strings."""
    lines: list[str] = []
    for name, pool in pools.items():
        lines.append(f"{name}:")
        for key, value in pool.items():
            if key == "servers":
                lines.append("  servers:")
                lines.extend(f"    - {_yaml_scalar(spec)}" for spec in value)
            else:
                lines.append(f"  {key}: {_yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


class NutcrackerProc(_Proc):
    """One nutcracker running a YAML configuration of memcache pools."""

    def __init__(self, pools: Mapping[str, Mapping[str, Any]], workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pools = {name: dict(pool) for name, pool in pools.items()}
        self.config_path = self.workdir / "nutcracker.yml"
        self.log = self.workdir / "nutcracker.log"
        self.stats_port: int | None = None

    def pool_address(self, name: str) -> tuple[str, int]:
        host, port = str(self.pools[name]["listen"]).rsplit(":", 1)
        return (host, int(port))

    def start(self) -> NutcrackerProc:
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.config_path.write_text(nutcracker_yaml(self.pools))
        binary = nutcracker_binary()
        check_log = self.workdir / "nutcracker-check.log"
        check = subprocess.run([binary, "-t", "-c", str(self.config_path), "-o",
                                str(check_log)], capture_output=True, timeout=30)
        if check.returncode != 0:
            text = (check.stdout + check.stderr).decode(errors="replace")
            if check_log.exists():
                text += check_log.read_text(errors="replace")
            raise RuntimeError(f"nutcracker rejects {self.config_path}: {text[-3000:]}")
        self.stats_port = free_port()
        nservers = sum(len(p.get("servers", ())) for p in self.pools.values())
        self._spawn([binary, "-c", str(self.config_path), "-s", str(self.stats_port),
                     "-a", HOST, "-o", str(self.log), "-v", "3"], self.workdir,
                    nofile=4 * nservers + 4 * len(self.pools) + 1024)
        addresses = [self.pool_address(name) for name in self.pools]
        self._wait_ready(lambda: all(_accepts(a) for a in addresses), repr(self))
        # Another process listening on a pool's port also accepts: nutcracker, which binds its
        # pools one after the other at start-up and exits at the first that fails, must still
        # be running once they all answer.
        time.sleep(0.2)
        assert self.process is not None
        if self.process.poll() is not None:
            _LIVE.pop(self.process.pid, None)
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{self!r} exited with {self.process.returncode} after its "
                               f"pools answered: {text[-3000:]}")
        return self

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NutcrackerProc {len(self.pools)} pools pid={self.pid} {state}>"


def start_nutcracker(pools: Mapping[str, Mapping[str, Any]], workdir: Path | str | None = None,
                     ) -> NutcrackerProc:
    """Write `pools` as YAML into `workdir`, check it with ``nutcracker -t``, start nutcracker
    and wait until every pool's ``listen`` address accepts connections."""
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ringkit-nc-"))
    return NutcrackerProc(pools, base).start()


def start_nutcracker_on_free_ports(pools: Mapping[str, Mapping[str, Any]],
                                   workdir: Path | str | None = None,
                                   attempts: int = 5) -> NutcrackerProc:
    """:func:`start_nutcracker` with each pool's ``listen`` set to a free 127.0.0.1 port.

    A port found free can be taken by another process before nutcracker binds it (nutcracker
    then exits: "Address already in use"); the start is retried on fresh ports."""
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ringkit-nc-"))
    for attempt in range(1, attempts + 1):
        ports = free_ports(len(pools))
        listening = {name: {**pool, "listen": f"{HOST}:{port}"}
                     for (name, pool), port in zip(pools.items(), ports)}
        try:
            return NutcrackerProc(listening, base / f"attempt-{attempt}").start()
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts:
                raise
    raise AssertionError("unreachable")


def stop_all(procs: Iterable[_Proc]) -> None:
    """SIGKILL every process still running and wait for each pid to be gone."""
    for proc in procs:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


@atexit.register
def _kill_leftovers() -> None:
    for pid, process in list(_LIVE.items()):
        try:
            if process.poll() is None:
                os.kill(pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        _LIVE.pop(pid, None)
