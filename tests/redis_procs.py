"""Real ``redis-server`` processes for the tests: started on free loopback ports, stopped by pid.

Each :class:`RedisProc` runs ``redis-server`` in the foreground (``--daemonize no``) under
``subprocess.Popen``, so the test holds its pid: it can kill it (SIGKILL or SIGTERM, then wait
until that pid is gone), restart it empty on the same port (only once the old pid is gone),
or pause and resume it (SIGSTOP / SIGCONT). Nothing is persisted (``--save ""``,
``--appendonly no``): a restart comes back empty, like a server that lost its memory.

Every process started here is killed when the interpreter exits, whatever happened to the
fixture that started it; the ``redis_servers`` fixture (tests/conftest.py) also stops its own at
the end of each test.

    servers = start_servers(3, tmp_path)
    client = servers[0].client()        # socket timeouts of 0.5 s, no retries
    servers[1].kill()                   # SIGKILL, waits for the pid to be gone
    servers[1].restart()                # empty, same port
    servers[2].pause(); servers[2].resume()
    stop_all(servers)
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["RedisProc", "start_servers", "stop_all", "free_port", "redis_server_binary"]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0     # seconds for a new redis-server to answer PING
STOP_TIMEOUT = 10.0      # seconds for a signalled redis-server to be gone

_LIVE: dict[int, subprocess.Popen[bytes]] = {}   # pid -> process, for the exit hook


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    return path


def free_port() -> int:
    """A loopback TCP port that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ping(port: int, timeout: float = 0.25) -> bool:
    """A raw RESP PING, so that starting a server needs nothing but the standard library."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProc:
    """One redis-server process on 127.0.0.1:`port`, run from `workdir`."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.host = HOST
        self.port = port
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    # -- identity ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def name(self) -> str:
        """The server as ringkit names it in errors and events."""
        return f"{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client with socket timeouts of 0.5 s and no retries (redis-py's default
        retries would turn one dead server into seconds of backoff)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5,
                                   "retry": Retry(NoBackoff(), 0)}
        options.update(kwargs)
        return redis.Redis(host=self.host, port=self.port, **options)

    def async_client(self, **kwargs: Any) -> Any:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5,
                                   "retry": Retry(NoBackoff(), 0)}
        options.update(kwargs)
        return redis.asyncio.Redis(host=self.host, port=self.port, **options)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> RedisProc:
        """Start an empty server on this port and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running "
                               f"(pid {self.pid})")
        log = self.workdir / "redis.log"
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", self.host,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(log),
            "--protected-mode", "yes",
        ]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT, cwd=self.workdir)
        self.process = process
        self.paused = False
        _LIVE[process.pid] = process
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if process.poll() is not None:
                _LIVE.pop(process.pid, None)
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"redis-server on port {self.port} exited with "
                                   f"{process.returncode}: {text[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                   f"within {START_TIMEOUT} s")
            time.sleep(0.005)
        return self

    def kill(self, sig: int = getattr(signal, "SIGKILL", signal.SIGTERM)) -> None:
        """Send `sig` (SIGKILL, or SIGTERM for a clean shutdown) and wait until the pid is gone.
        A paused server is resumed after the signal, so that a SIGTERM can be acted on."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            if self.paused and sig != getattr(signal, "SIGKILL", None):
                process.send_signal(signal.SIGCONT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        _LIVE.pop(process.pid, None)
        self.paused = False

    def terminate(self) -> None:
        self.kill(signal.SIGTERM)

    def restart(self) -> RedisProc:
        """Start again, empty, on the same port; only after the old pid is gone."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is still running "
                               f"(pid {self.pid}); kill it first")
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing until resumed."""
        assert self.process is not None and self.running
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None and self.running
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisProc {self.host}:{self.port} pid={self.pid} {state}>"


def start_servers(n: int, workdir: Path | str | None = None) -> list[RedisProc]:
    """Start `n` empty servers on free ports (a port taken in the meantime is skipped)."""
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ringkit-redis-"))
    servers: list[RedisProc] = []
    try:
        while len(servers) < n:
            for attempt in range(5):
                port = free_port()
                proc = RedisProc(port, base / f"redis-{port}")
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


def stop_all(servers: list[RedisProc]) -> None:
    """SIGKILL every server still running and wait for each pid to be gone."""
    for server in servers:
        try:
            server.kill()
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
