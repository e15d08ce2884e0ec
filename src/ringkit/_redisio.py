"""Send-then-read command batches on redis-py connections.

A quorum round asks several servers at once. Instead of one thread per server, each server's
commands are written to its connection first (:meth:`Batch.send`) and the replies are read
afterwards (:meth:`Batch.replies`): the servers work in parallel while the client waits on the
first, and no thread is handed anything. Every read is bounded by the connection's socket
timeout, so a dead or paused server costs at most that.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

__all__ = ["Batch", "no_retry", "pack", "script_sha"]


def no_retry(*, asynchronous: bool = False) -> Any:
    """A redis-py Retry that never retries: for the clients ringkit makes from URLs, so that a
    dead server fails fast and counts against the quorum instead of stalling the call."""
    from redis.backoff import NoBackoff

    if asynchronous:
        from redis.asyncio.retry import Retry as AsyncRetry

        return AsyncRetry(NoBackoff(), 0)
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


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

    def send(self) -> Batch:
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([pack(self._commands)], check_health=False)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        self._conn = conn
        return self

    def replies(self) -> list[Any]:
        from redis.exceptions import NoScriptError, ResponseError

        conn, pool = self._conn, self._client.connection_pool
        if conn is None:
            raise RuntimeError("Batch.replies() before send()")
        self._conn = None
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
            pool.release(conn)
        if self._scripts and any(isinstance(r, NoScriptError) for r in out):
            for source in self._scripts.values():
                self._client.script_load(source)
            return self.send().replies()
        return out
