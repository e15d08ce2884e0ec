"""Send-then-read command batches on redis-py connections.

A quorum round asks several servers at once. Instead of one thread per server, each server's
commands are written to its connection first (:meth:`Batch.send`) and the replies are read
afterwards (:meth:`Batch.replies`): the servers work in parallel while the client waits on the
first, and no thread is handed anything. Every read is bounded by the connection's socket
timeout, so a dead or paused server costs at most that.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

__all__ = ["Batch", "client_from_url", "no_retry", "pack", "script_sha"]


def client_from_url(url: str, timeout: float, *, asynchronous: bool = False) -> Any:
    """A redis-py client for `url` with `timeout` on connect and on every call, and no
    client-side retries (see :func:`no_retry`)."""
    try:
        import redis
        import redis.asyncio
    except ImportError:
        raise ImportError("Redis support needs redis-py: pip install 'ringkit[redis]'") from None
    kind = redis.asyncio.Redis if asynchronous else redis.Redis
    return kind.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                         retry=no_retry(asynchronous=asynchronous))


def no_retry(*, asynchronous: bool = False) -> Any:
    """A redis-py Retry that never retries: for the clients ringkit makes from URLs, so that a
    dead server fails fast and counts against the quorum instead of stalling the call."""
    from redis.backoff import NoBackoff

    if asynchronous:
        from redis.asyncio.retry import Retry as AsyncRetry

        return AsyncRetry(NoBackoff(), 0)
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _redis_errors() -> type[Exception]:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError


def script_sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


_c_pack: Any
try:  # hiredis (in ringkit's `redis` extra) packs in C
    from hiredis import pack_command as _c_pack
except ImportError:  # pragma: no cover - exercised where hiredis is missing
    _c_pack = None


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """RESP encoding of a batch of commands (redis-py's encoder costs more than the round trip
    on a fast network; this one only handles what ringkit sends: bytes, str, int)."""
    if _c_pack is not None:
        return b"".join([_c_pack(command) for command in commands])
    return pack_python(commands)


def pack_python(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """:func:`pack` without hiredis."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for a in command:
            kind = a.__class__
            if kind is bytes:
                b = a
            elif kind is str:
                b = a.encode()
            elif kind is int:
                b = b"%d" % a
            else:
                b = _arg(a)
            append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


class _Held:
    """One connection kept out of a client's pool for ringkit's rounds: taking a connection from
    the pool and giving it back costs more than packing the commands. Used by one round at a
    time (``lock``); a round that finds it busy takes a pooled connection as usual."""

    __slots__ = ("conn", "lock", "pid")

    def __init__(self) -> None:
        self.conn: Any = None
        self.lock = threading.Lock()
        self.pid = 0


_HELD: weakref.WeakKeyDictionary[Any, _Held] = weakref.WeakKeyDictionary()
_HELD_GUARD = threading.Lock()


def _held_for(client: Any) -> _Held | None:
    try:
        held = _HELD.get(client)
        if held is None:
            with _HELD_GUARD:
                held = _HELD.setdefault(client, _Held())
        return held
    except TypeError:  # a client that cannot be weakly referenced: always use the pool
        return None


class Batch:
    """One pipelined round trip to one server: ``send()``, then ``replies()``.

    ``commands`` are argument tuples (``("GET", key)``, ``("EVALSHA", sha, 1, key, ...)``).
    Error replies come back as exception objects in their slot; a broken connection raises.
    A script missing from the server's cache (NOSCRIPT, after a restart) is loaded from
    ``scripts`` ({sha: source}) and the batch is sent again, so scripts must be idempotent.
    """

    def __init__(self, client: Any, commands: Sequence[tuple[Any, ...]],
                 scripts: dict[str, str] | None = None) -> None:
        self._client = client
        self._commands = list(commands)
        self._scripts = scripts or {}
        self._conn: Any = None
        self._held: _Held | None = None

    def send(self) -> Batch:
        pool = self._client.connection_pool
        held = _held_for(self._client)
        if held is not None and held.lock.acquire(blocking=False):
            pid = os.getpid()
            if held.conn is None or held.pid != pid:   # first use, or a forked child
                held.conn = pool.make_connection()
                held.pid = pid
            conn = held.conn
            try:
                try:
                    # Readable between rounds means closed by the server (or stray data): start
                    # over on a fresh socket, as the pool does when it hands out a connection.
                    if conn._sock is not None and conn.can_read(timeout=0):
                        conn.disconnect()
                    conn.send_packed_command([pack(self._commands)], check_health=False)
                except (ConnectionError, OSError, _redis_errors()):
                    # The kept connection may have gone stale (server restarted): once more
                    # on a fresh socket before calling the server dead.
                    conn.disconnect()
                    conn.send_packed_command([pack(self._commands)], check_health=False)
            except BaseException:
                conn.disconnect()
                held.lock.release()
                raise
            self._conn, self._held = conn, held
            return self
        conn = pool.get_connection()
        try:
            conn.send_packed_command([pack(self._commands)], check_health=False)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self._conn, self._held = conn, None
        return self

    def replies(self) -> list[Any]:
        from redis.exceptions import NoScriptError, ResponseError

        conn, held = self._conn, self._held
        if conn is None:
            raise RuntimeError("Batch.replies() before send()")
        self._conn = self._held = None
        out: list[Any] = []
        try:
            for _ in self._commands:
                try:
                    out.append(conn.read_response())
                except ResponseError as exc:
                    out.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            if held is not None:
                held.lock.release()
            else:
                self._client.connection_pool.release(conn)
        if self._scripts and any(isinstance(r, NoScriptError) for r in out):
            for source in self._scripts.values():
                self._client.script_load(source)
            return self.send().replies()
        return out
