"""Rounds of Redis commands on several servers at once, through redis-py connections.

A quorum round asks several servers at once and is over as soon as its outcome is known: a
majority granted, or too many refused or failed for one to be possible. The sync transport
sends each server its commands on a connection of ringkit's own (non-blocking: what the socket
does not take at once is written from the poll loop), waits on all their sockets together
(``poll``) and reads with hiredis, the parser redis-py itself uses; the async transport runs one
task per server on ``redis.asyncio`` connections. Either way:

- **one deadline per call**: a server that does not answer within ``timeout`` of the round's
  start counts as failed, and the round never runs past the latest deadline;
- **late replies are dealt with after**: a call still owed replies when its round ended waits on
  its link, where the next round that needs a connection to that server finishes it if its
  replies are in (the common case: a healthy server a few microseconds behind its peers, at no
  cost of a thread hand-off); a call no round finished within _GRACE is taken over by one
  background thread per process (under asyncio: its own task). Either passes the late replies to
  the call's ``late`` handler (a late lock grant is released there, a late stale version
  repaired) and sends its follow-ups on the same connection, after the late reply, so that a
  follow-up can never overtake what it follows up; a connection is reused only once every reply
  it owed was read, and closed when they do not come in time;
- **a slow server costs one timeout, not one per round**: while a server owes replies on
  several connections, or its last call failed, rounds skip it (it counts as failed at once:
  :class:`ServerSkipped`) and a background probe (connect, PING) brings it back when it answers
  again. No round waits on a connect that needs the server's answer (AUTH, SELECT, TLS) to a
  server that owes replies or failed.

redis-py makes every connection (its connection class and settings: host, port, db, TLS,
credentials) and sends the handshake; ringkit's own connections speak RESP2 and skip CLIENT
SETINFO. ``Link.close()`` closes every connection that ringkit opened to the server, the ones
owed late replies included.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ringkit.validation import server_label

__all__ = ["AsyncCall", "AsyncLink", "Call", "Link", "Packed", "ServerSkipped", "client_from_url",
           "gather", "gather_async", "no_retry", "pack", "script_sha"]

log = logging.getLogger("ringkit.redis")

# A late handler receives the replies of a call that came after its round ended, and returns the
# commands to send next on the same connection (their replies are read and dropped), or None.
Late = Callable[[list[Any]], Sequence[tuple[Any, ...]] | None]

_MISSING = object()          # hiredis' "not enough data yet"
_FORKS = 0                   # bumped in a forked child: connections of the parent are not used
_PROBE_FIRST = 0.02          # seconds before the first reconnection probe; doubles up to timeout
_MAX_LATE = 8                # connections of one server owed late replies before rounds skip it
_GRACE = 0.003               # seconds a late call waits on its link (for a round to finish it)
                             # before the late reader thread takes it over


def client_from_url(url: str, timeout: float, *, asynchronous: bool = False) -> Any:
    """A redis-py client for `url` with `timeout` on connect and on every call, and no
    client-side retries (see :func:`no_retry`)."""
    _require_redis()
    import redis
    import redis.asyncio

    kind = redis.asyncio.Redis if asynchronous else redis.Redis
    return kind.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                         retry=no_retry(asynchronous=asynchronous))


def _require_redis() -> None:
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"Redis support needs redis-py and hiredis: pip install "
                          f"'ringkit[redis]' ({exc})") from None


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


class Packed:
    """Commands already encoded in RESP (`data`, `n` commands, none of them a script): a
    batch of many small commands built at once instead of a tuple each."""

    __slots__ = ("data", "n")

    def __init__(self, data: bytes, n: int) -> None:
        self.data = data
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        raise IndexError("a Packed batch holds no scripts to send again")


def pack(commands: Sequence[tuple[Any, ...] | bytes] | Packed) -> bytes:
    """RESP encoding of a batch of commands (redis-py's encoder costs more than the round trip
    on a fast network; this one only handles what ringkit sends: bytes, str, int). A command
    given as bytes is already RESP (ringkit._records packs the store's batches)."""
    if isinstance(commands, Packed):
        return commands.data
    if _c_pack is not None:
        if len(commands) == 1:
            one = commands[0]
            return one if isinstance(one, bytes) else _c_pack(one)
        return b"".join([c if isinstance(c, bytes) else _c_pack(c) for c in commands])
    return pack_python(commands)


def pack_python(commands: Sequence[tuple[Any, ...] | bytes]) -> bytes:
    """:func:`pack` without hiredis."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        if isinstance(command, bytes):     # a command already in RESP
            append(command)
            continue
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


def _new_reader() -> Any:
    import hiredis
    from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

    def reply_error(message: str) -> Exception:
        if message.startswith("NOSCRIPT"):
            return NoScriptError(message)
        return ResponseError(message)

    return hiredis.Reader(protocolError=InvalidResponse, replyError=reply_error,
                          notEnoughData=_MISSING)


class ServerSkipped(ConnectionError):
    """A round did not ask this server: it failed and is being probed (``busy`` False), or it
    still owes replies to earlier rounds on every connection a round may use (``busy`` True:
    slow, not known to be down)."""

    def __init__(self, message: str, *, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


def _connection_error(message: str) -> Exception:
    from redis.exceptions import ConnectionError as RedisConnectionError

    return RedisConnectionError(message)


def _timeout_error(message: str) -> Exception:
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return RedisTimeoutError(message)


_NOSCRIPT: Any = None


def _is_noscript(reply: Any) -> bool:
    global _NOSCRIPT
    if _NOSCRIPT is None:
        from redis.exceptions import NoScriptError

        _NOSCRIPT = NoScriptError
    return isinstance(reply, _NOSCRIPT)


def _script_reload(commands: Sequence[tuple[Any, ...]], replies: Sequence[Any],
                   scripts: dict[str, str]) -> tuple[list[int], list[tuple[Any, ...]]] | None:
    """The one NOSCRIPT path, sync and async: after a server lost its script cache (a restart),
    the commands to send again, on the same connection: every script loaded, then only the
    commands that failed with NOSCRIPT (the others ran, and must not run twice). None when no
    reply was NOSCRIPT. Their replies go back in place with :func:`_script_reloaded`."""
    missing = [i for i, r in enumerate(replies) if isinstance(r, Exception) and _is_noscript(r)]
    if not missing:
        return None
    resend = [("SCRIPT", "LOAD", source) for source in scripts.values()]
    resend += [commands[i] for i in missing]
    return missing, resend


def _script_reloaded(replies: list[Any], missing: Sequence[int], again: Sequence[Any],
                     scripts: dict[str, str]) -> None:
    """Put the replies of the commands sent again (after the script loads) in their places."""
    for index, reply in zip(missing, again[len(scripts):]):
        replies[index] = reply


def _connection_kwargs(client: Any, timeout: float, *, asynchronous: bool
                       ) -> tuple[Any, dict[str, Any], bool]:
    """The connection class and settings for ringkit's own connections to `client`'s server,
    and whether connecting needs no reply from the server (no AUTH, SELECT, CLIENT SETNAME,
    HELLO or TLS handshake), so that a connect to a paused server does not wait on it."""
    pool = client.connection_pool
    kind = pool.connection_class
    kwargs = dict(pool.connection_kwargs)
    # ringkit's own connections never retry (a dead server must fail fast and count against the
    # quorum), never wait on a socket longer than the round's timeout, speak RESP2 (what the
    # rounds parse), and skip CLIENT SETINFO (one reply less to wait for on connect).
    kwargs["retry"] = no_retry(asynchronous=asynchronous)
    kwargs["socket_timeout"] = timeout
    if not kwargs.get("socket_connect_timeout"):
        kwargs["socket_connect_timeout"] = timeout
    for extra in ({"protocol": 2}, {"driver_info": None}, {"lib_name": None, "lib_version": None}):
        if "lib_name" in extra and "driver_info" in kwargs:
            continue        # redis-py 7.1+: driver_info=None already, lib_name is deprecated
        trial = {**kwargs, **extra}
        try:
            kind(**trial)
        except TypeError:
            continue
        kwargs = trial
    handshake = (kwargs.get("password") or kwargs.get("username")
                 or kwargs.get("credential_provider") or kwargs.get("db")
                 or kwargs.get("client_name") or kwargs.get("protocol") not in (None, 2, "2")
                 or "ssl" in kind.__name__.lower() or any(k.startswith("ssl_") for k in kwargs))
    return kind, kwargs, not handshake


def server_name(client: Any) -> str:
    """A client's server as ringkit names it in errors and events: host:port/db."""
    return server_label(client)


# ------------------------------------------------------------------------------------------------
# Sync transport


_READ = select.POLLIN | select.POLLERR | select.POLLHUP if hasattr(select, "POLLIN") else 1
_WRITE = select.POLLOUT if hasattr(select, "POLLOUT") else 4
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Conn:
    """One socket to a server, opened by redis-py (handshake included), then non-blocking: the
    round writes what the socket takes and keeps the rest (a full socket buffer never stalls a
    round), and reads with hiredis what has come."""

    __slots__ = ("link", "redis", "sock", "fd", "reader", "buf", "ssl", "poller", "mask",
                 "out", "pos")

    def __init__(self, link: Link, timeout: float | None = None) -> None:
        self.link = link
        self.redis = link.new_connection(timeout)
        self.redis.connect()
        self.sock = self.redis._sock
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.poller = select.poll() if hasattr(select, "poll") else None
        self.mask = _READ
        if self.poller is not None:
            self.poller.register(self.fd, self.mask)
        self.reader = _new_reader()
        self.buf = bytearray(65536)
        self.ssl = hasattr(self.sock, "pending")
        self.out = b""
        self.pos = 0

    def readable(self) -> bool:
        """Whether the socket has data or was closed (between rounds: a stale connection)."""
        if self.ssl and self.sock.pending():
            return True
        if self.poller is None:  # pragma: no cover - no poll() (Windows)
            return bool(select.select([self.fd], [], [], 0)[0])
        self._want(_READ)
        return bool(self.poller.poll(0))

    @property
    def writing(self) -> bool:
        """Whether some of what was sent is still waiting for room in the socket."""
        return self.pos < len(self.out)

    def send(self, data: bytes) -> None:
        """Queue `data` and write what the socket takes now."""
        if self.writing:
            self.out = self.out[self.pos:] + data
        else:
            self.out = data
        self.pos = 0
        self.flush()

    def flush(self) -> None:
        view = memoryview(self.out)
        try:
            while self.pos < len(self.out):
                self.pos += self.sock.send(view[self.pos:])
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.close()
            raise _connection_error(f"{self.link.name}: error while writing: {exc}") from exc
        finally:
            view.release()
        self.out = b""
        self.pos = 0

    def recv(self) -> None:
        """Read what the socket has into the parser."""
        try:
            n = self.sock.recv_into(self.buf)
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self.close()
            raise _connection_error(f"{self.link.name}: error while reading: {exc}") from exc
        if n == 0:
            self.close()
            raise _connection_error(f"{self.link.name}: connection closed by the server")
        self.reader.feed(self.buf, 0, n)

    def _want(self, mask: int) -> None:
        if mask != self.mask and self.poller is not None:
            self.poller.modify(self.fd, mask)
            self.mask = mask

    def wait(self, deadline: float) -> bool:
        """Wait until the socket has something to read (True) or `deadline` passed (False),
        writing the rest of what was sent whenever the socket takes more."""
        while True:
            if self.ssl and self.sock.pending():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            mask = _READ | _WRITE if self.writing else _READ
            if self.poller is None:  # pragma: no cover - no poll() (Windows)
                r, w, _ = select.select([self.fd], [self.fd] if self.writing else [], [], left)
                events = (_READ if r else 0) | (_WRITE if w else 0)
            else:
                self._want(mask)
                found = self.poller.poll(max(1, int(left * 1000) + 1))
                events = found[0][1] if found else 0
            if events & _WRITE:
                self.flush()
            if events & _READ:
                return True

    def ping(self, deadline: float) -> bool:
        """PING and wait for the PONG until `deadline`."""
        try:
            self.send(b"*1\r\n$4\r\nPING\r\n")
            reply: Any = _MISSING
            while reply is _MISSING:
                if not self.wait(deadline):
                    return False
                self.recv()
                reply = self.reader.gets()
        except Exception:  # noqa: BLE001
            return False
        return not isinstance(reply, Exception)

    def close(self) -> None:
        try:
            self.redis.disconnect()
        except Exception:  # noqa: BLE001 - closing what is already broken
            pass


# What Link.take() says about a server: use this connection, connect now, or skip it (it
# failed and is being probed, or it is busy owing replies).
_CONNECT = "connect"
_SKIP = "skip"
_BUSY = "busy"


class Link:
    """ringkit's own connections to one Redis server, made with its client's connection
    settings and kept out of the client's pool, so that no connection of the application is
    ever left owing replies. Thread safe; fork safe (a child starts with no connections)."""

    def __init__(self, client: Any, timeout: float, name: str | None = None) -> None:
        _require_redis()
        self.client = client
        self.timeout = float(timeout)
        self.name = name or server_name(client)
        self._class, self._kwargs, self._fast = _connection_kwargs(client, self.timeout,
                                                                   asynchronous=False)
        self._guard = threading.Lock()
        self._reset(os.getpid())

    def _reset(self, pid: int) -> None:
        self._pid = pid
        self._forks = _FORKS
        self._idle: list[_Conn] = []
        self._late = 0              # connections owed late replies (deferred or taken over)
        self._deferred: list[Call] = []   # late calls nobody has taken yet, oldest first
        self._suspect = False       # its last call failed or timed out: probe before use
        self._probing = False
        self._closed = False        # close() stops the probe (a later use reopens)
        self._generation = 0        # bumped by close(): connections of before are not kept

    def new_connection(self, timeout: float | None = None) -> Any:
        if timeout is None:
            return self._class(**self._kwargs)
        kwargs = dict(self._kwargs)
        kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = max(0.001, timeout)
        return self._class(**kwargs)

    # -- connections ------------------------------------------------------------------------------

    def take(self, must: bool = False) -> _Conn | str:
        """A connection with nothing owed on it; or _CONNECT when a new one may be made now;
        or _SKIP when the server must be skipped: it failed and is being probed, or it owes
        late replies on _MAX_LATE connections already, or on one when connecting needs a reply
        from it (AUTH, SELECT, TLS: a paused server would stall the round). A connection is
        then warmed up in the background. With `must` (a call to this one server, not a quorum
        round) it is never skipped."""
        if self._forks != _FORKS:
            with self._guard:
                self._reset(os.getpid())   # the parent's sockets are the parent's
        while True:
            with self._guard:
                if self._suspect and not must:
                    self._probe_locked()
                    return _SKIP
                conn = self._idle.pop() if self._idle else None
                deferred = bool(self._deferred)
            if conn is None and deferred:
                conn = self._reclaim()
            if conn is None:
                with self._guard:
                    if self._late and not must and (self._late >= _MAX_LATE or not self._fast):
                        self._probe_locked()
                        return _BUSY
                    self._closed = False
                    return _CONNECT
            if not conn.readable():
                return conn
            conn.close()    # readable between rounds: closed by the server, or stray data

    def defer(self, call: Call) -> None:
        """Take a call whose round ended while it still owed replies: it waits here, where the
        next round that needs a connection finishes it if its replies are in (no thread hand-off
        in the common case: a healthy server a few microseconds behind its peers); after _GRACE
        the late reader thread takes it over."""
        wait = call.late_for if call.late_for is not None else self.timeout
        call._until = max(call.deadline, call.started + wait)
        call._handed = time.monotonic()
        with self._guard:
            self._late += 1
            call._gen = self._generation
            self._deferred.append(call)
        _REAPER.watch(self)

    def _reclaim(self) -> _Conn | None:
        """Finish the deferred calls whose replies are in (oldest first); a connection one of
        them freed, or None."""
        with self._guard:
            calls, self._deferred = self._deferred, []
        free: _Conn | None = None
        keep: list[Call] = []
        for call in calls:
            conn = call.conn
            if free is not None or not _late_step(call, conn is not None and conn.readable()):
                keep.append(call)
                continue
            conn, call.conn = call.conn, None
            with self._guard:
                self._late = max(0, self._late - 1)
                usable = conn is not None and call._gen == self._generation \
                    and self._pid == os.getpid()
            if conn is not None and not usable:
                conn.close()
            elif conn is not None:
                free = conn
        if keep:
            with self._guard:
                self._deferred[:0] = keep
            # The late reader may have swept this link while the calls were out, found nothing
            # and stopped watching it: watch again, or they would wait for a round forever.
            _REAPER.watch(self)
        return free

    def take_deferred(self, now: float, everything: bool = False) -> list[Call]:
        """The deferred calls the late reader takes over: those older than _GRACE."""
        with self._guard:
            taken = 0
            for call in self._deferred:
                if not everything and call._handed + _GRACE > now:
                    break
                taken += 1
            calls, self._deferred = self._deferred[:taken], self._deferred[taken:]
            return calls

    @property
    def deferred(self) -> bool:
        return bool(self._deferred)

    def connect(self, timeout: float | None = None) -> _Conn:
        """A new connection, now (within `timeout`); a failure makes the link suspect."""
        try:
            return _Conn(self, timeout)
        except Exception:
            self.failed()
            raise

    def give(self, conn: _Conn, generation: int | None = None) -> None:
        """Take back a connection that owes nothing."""
        with self._guard:
            if self._forks == _FORKS and (generation is None
                                          or generation == self._generation):
                self._suspect = False
                self._idle.append(conn)
                return
        conn.close()

    def failed(self) -> None:
        """A call failed or timed out: skip this server until a probe finds it answering."""
        with self._guard:
            self._suspect = True
            self._probe_locked()

    def late_finished(self) -> None:
        with self._guard:
            self._late = max(0, self._late - 1)

    def _probe_locked(self) -> None:
        if self._probing or self._closed:
            return
        self._probing = True
        threading.Thread(target=_probe, args=(weakref.ref(self), os.getpid()),
                         name=f"ringkit-probe-{self.name}", daemon=True).start()

    def _probe_once(self) -> bool:
        """Connect and PING; on a PONG within the timeout the link is usable again."""
        try:
            conn = _Conn(self)
        except Exception:  # noqa: BLE001 - still down
            return False
        if not conn.ping(time.monotonic() + self.timeout):
            conn.close()
            return False
        with self._guard:
            if self._pid == os.getpid() and not self._closed:
                self._suspect = False
                self._idle.append(conn)
                return True
        conn.close()
        return True

    def _wanted(self) -> bool:
        """Whether a probe should go on (caller holds the guard)."""
        return not self._closed and (self._suspect or not self._idle)

    def revive(self) -> None:
        """Forget that the server failed: the next round connects to it at once (for calls
        that must reach every server, such as initialize())."""
        with self._guard:
            self._suspect = False
            self._closed = False

    @property
    def skipped(self) -> bool:
        """Whether a round would skip this server now."""
        return self._suspect or (not self._idle and self._late > 0
                                 and (self._late >= _MAX_LATE or not self._fast))

    def close(self) -> None:
        """Close every connection: the idle ones now, the ones owed late replies as soon as
        the late reader sees them (they are never reused). A later round reconnects."""
        with self._guard:
            idle, self._idle = self._idle, []
            deferred, self._deferred = self._deferred, []
            self._late = max(0, self._late - len(deferred))
            self._generation += 1
            self._closed = True
            self._suspect = False
        for conn in idle:
            conn.close()
        for call in deferred:
            if call.conn is not None:
                call.conn.close()
                call.conn = None
        _REAPER.close_link(self)

    def __repr__(self) -> str:
        return f"<Link {self.name} idle={len(self._idle)} late={self._late}>"


def _probe(ref: weakref.ReferenceType[Link], pid: int) -> None:
    """Warm up a connection to a server that failed or owes late replies: connect and PING,
    with a backoff, until it answers, the link is closed, it has an idle connection again, or
    nothing refers to the link any more."""
    wait = 0.0
    while True:
        if wait:
            time.sleep(wait)
        link = ref()
        if link is None or os.getpid() != pid:
            return
        with link._guard:
            if not link._wanted():
                link._probing = False
                return
        if link._probe_once():
            with link._guard:
                link._probing = False
            return
        wait = min(max(wait * 2, _PROBE_FIRST), max(link.timeout, _PROBE_FIRST))
        del link


class Call:
    """One server's part of a round: `commands` sent together on one connection, their replies
    read back in order. Error replies come back as exception objects in their slot; a script
    missing from the server's cache (NOSCRIPT) is loaded from `scripts` ({sha: source}) and
    only the commands that failed with NOSCRIPT are sent again.

    ``late`` is called with the replies when they come after the round ended (see the module
    docs); ``late_for`` is how long after the call's start its late replies are still waited
    for (default: the link's timeout); then the connection is closed.

    After the round, ``state`` says what the round saw: "ok" (``replies`` complete), "failed"
    (``error``) or "late" (the round was decided before the replies came; they go to the late
    handler). Only the round's thread reads ``replies`` of a call that is "ok".
    """

    __slots__ = ("link", "commands", "scripts", "late", "late_for", "limit", "must", "replies",
                 "error", "conn", "deadline", "started", "state", "connecting", "sent", "_owed",
                 "_retry", "_extra", "_late_ran", "_gen", "_until", "_handed")

    def __init__(self, link: Link, commands: Sequence[tuple[Any, ...]],
                 scripts: dict[str, str] | None = None, late: Late | None = None,
                 late_for: float | None = None) -> None:
        self.link = link
        self.commands = commands
        self.scripts = scripts
        self.late = late
        self.late_for = late_for
        self.limit: float | None = None       # a deadline shorter than the link's timeout
        self.must = False                     # never skip the server (not a quorum round)
        self.replies: list[Any] = []
        self.error: BaseException | None = None
        self.conn: _Conn | None = None
        self.deadline = 0.0
        self.started = 0.0
        self.state: str | None = None
        self.connecting = False               # waits for a new connection (made after sends)
        self.sent = False                     # the commands were written to a connection
        self._owed = 0                        # replies still to read on the connection
        self._retry: list[int] | None = None  # indices sent again after a script load
        self._extra: list[Any] = []           # replies to the script loads and resent commands
        self._late_ran = False
        self._gen = 0
        self._until = 0.0
        self._handed = 0.0

    @property
    def ok(self) -> bool:
        """Every reply read (during the round)."""
        return self.conn is None and self.error is None and not self.connecting

    def start(self, now: float) -> None:
        """Send on a warm connection; a call that needs a new one is left ``connecting``."""
        self.started = now
        link = self.link
        self.deadline = now + (link.timeout if self.limit is None
                               else min(link.timeout, self.limit))
        taken = link.take(self.must)
        if taken is _SKIP:
            self.error = ServerSkipped(f"{link.name}: skipped (its last call failed; it is being "
                                       f"probed)", busy=False)
            return
        if taken is _BUSY:
            self.error = ServerSkipped(f"{link.name}: skipped (busy: it still owes replies to "
                                       f"earlier rounds)", busy=True)
            return
        if taken is _CONNECT:
            self.connecting = True
            return
        assert isinstance(taken, _Conn)
        try:
            taken.send(pack(self.commands))
        except Exception:  # noqa: BLE001
            # The connection went stale between rounds (server restarted): a new one.
            self.connecting = True
            return
        self.conn = taken
        self.sent = True
        self._owed = len(self.commands)

    def connect(self) -> None:
        """Make the new connection (within the call's deadline) and send."""
        self.connecting = False
        try:
            conn = self.link.connect(self.deadline - time.monotonic())
            conn.send(pack(self.commands))
        except Exception as exc:  # noqa: BLE001 - counted against the quorum
            self.link.failed()
            self.error = exc
            return
        self.conn = conn
        self.sent = True
        self._owed = len(self.commands)

    def pump(self, *, retry_scripts: bool = True) -> bool:
        """Read what the socket has; True once nothing more is owed (or the call failed)."""
        conn = self.conn
        if conn is None:
            return True
        try:
            conn.recv()
            return self._collect(retry_scripts)
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)
            return True

    def _collect(self, retry_scripts: bool) -> bool:
        conn = self.conn
        assert conn is not None
        gets = conn.reader.gets
        n = len(self.commands)
        while self._owed:
            reply = gets()
            if reply is _MISSING:
                return False
            self._owed -= 1
            if len(self.replies) < n:
                self.replies.append(reply)
            elif self._retry is not None and len(self._extra) < len(self.scripts or ()) + len(
                    self._retry):
                self._extra.append(reply)
            # else: the reply to a late follow-up, dropped
        if self._retry is not None and self._extra:
            _script_reloaded(self.replies, self._retry, self._extra, self.scripts or {})
            self._extra = []
        elif retry_scripts and self.scripts and self._retry is None:
            reload = _script_reload(self.commands, self.replies, self.scripts)
            if reload is not None:
                self._retry, resend = reload
                self._owed = len(resend)
                conn.send(pack(resend))
                return self._collect(retry_scripts)
        return True

    def follow_up(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """Send more commands on this call's connection; their replies are read and dropped."""
        assert self.conn is not None
        self._owed += len(commands)
        self.conn.send(pack(commands))

    def fail(self, exc: BaseException) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.error is None:
            self.error = exc
        self.link.failed()

    def finish(self) -> None:
        """Give the connection back (every reply was read)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            self.link.give(conn)

    def result(self) -> list[Any]:
        """The replies; raises what the call failed with (or a timeout, if still owed)."""
        if self.error is not None:
            raise self.error
        if self.state == "late" or self.conn is not None:
            raise _timeout_error(f"{self.link.name}: the round ended before its reply")
        return self.replies

    def __repr__(self) -> str:
        return f"<Call {self.link.name} {len(self.commands)} commands {self.state}>"


def gather(calls: Sequence[Call], decided: Callable[[], bool] | None = None) -> None:
    """Run a round: send every call on a warm connection, make the new connections that are
    needed (after those sends, in parallel, within the round's deadline), then read replies as
    they come, until `decided()` is true, every call finished, or every call's deadline passed.
    Replies already there when the round is decided are read too; calls still owed replies are
    handed to the late reader. Afterwards each call's ``state`` is "ok", "failed" or "late"."""
    try:
        _gather(calls, decided)
    except BaseException:
        # Interrupted (KeyboardInterrupt, a signal handler raising): what is still owed is
        # late, so a grant sent for is still released, and no connection is left half-read.
        for call in calls:
            if call.conn is not None and call.state is None:
                call.state = "late"
                call.link.defer(call)
        raise


def _gather(calls: Sequence[Call], decided: Callable[[], bool] | None) -> None:
    now = time.monotonic()
    if len(calls) == 1:
        _gather_one(calls[0], now)
        return
    for call in calls:
        call.start(now)
    connecting = [call for call in calls if call.connecting]
    if len(connecting) == 1:
        connecting[0].connect()
    elif connecting:
        threads = [threading.Thread(target=call.connect, daemon=True) for call in connecting]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    waiting = [call for call in calls if call.conn is not None]
    late: list[Call] = []
    overdue: list[Call] = []
    if len(waiting) == 1 and len(calls) == 1:
        if not _wait_one(waiting[0]):
            overdue.append(waiting[0])
    elif waiting:
        late, overdue = _wait_many(waiting, decided)
    for call in calls:
        if call in late:
            call.state = "late"
        elif call in overdue:
            call.error = _timeout_error(f"{call.link.name}: no reply within "
                                        f"{call.deadline - call.started:.3g} s")
            call.state = "failed"
        else:
            call.state = "ok" if call.error is None else "failed"
    for call in overdue:
        call.link.failed()
        call.link.defer(call)
    for call in late:
        call.link.defer(call)


def _gather_one(call: Call, now: float) -> None:
    """gather() of a single call."""
    call.start(now)
    if call.connecting:
        call.connect()
    if call.conn is None:
        call.state = "ok" if call.error is None else "failed"
        return
    if _wait_one(call):
        call.state = "ok" if call.error is None else "failed"
        return
    call.error = _timeout_error(f"{call.link.name}: no reply within "
                                f"{call.deadline - call.started:.3g} s")
    call.state = "failed"
    call.link.failed()
    call.link.defer(call)


def _wait_one(call: Call) -> bool:
    """A round of one call: wait on its socket alone; False if the deadline passed."""
    conn = call.conn
    assert conn is not None
    while True:
        if not conn.wait(call.deadline):
            return False
        if call.pump():
            call.finish()
            return True


def _wait_many(waiting: list[Call], decided: Callable[[], bool] | None
               ) -> tuple[list[Call], list[Call]]:
    poller = select.poll()
    by_fd: dict[int, Call] = {}
    masks: dict[int, int] = {}
    for call in waiting:
        assert call.conn is not None
        fd = call.conn.fd
        by_fd[fd] = call
        masks[fd] = _READ | _WRITE if call.conn.writing else _READ
        poller.register(fd, masks[fd])
    overdue: list[Call] = []
    while by_fd:
        if decided is not None and decided():
            break
        now = time.monotonic()
        soonest = min(call.deadline for call in by_fd.values())
        if soonest <= now:
            for fd, call in list(by_fd.items()):
                if call.deadline <= now:
                    del by_fd[fd]
                    poller.unregister(fd)
                    overdue.append(call)
            continue
        ready = _ssl_pending(by_fd) or poller.poll(max(1, int((soonest - now) * 1000) + 1))
        for fd, events in ready:
            ready_call = by_fd.get(fd)
            if ready_call is None:
                continue
            conn = ready_call.conn
            if events & _WRITE and conn is not None:
                try:
                    conn.flush()
                except Exception as exc:  # noqa: BLE001
                    ready_call.fail(exc)
                    del by_fd[fd]
                    poller.unregister(fd)
                    continue
                if not conn.writing:
                    masks[fd] = _READ
                    poller.modify(fd, _READ)
            if events & _READ and ready_call.pump():
                del by_fd[fd]
                poller.unregister(fd)
                ready_call.finish()
    if by_fd:
        # Decided: what already came is part of the outcome; the rest is late.
        for fd, events in _ssl_pending(by_fd) or poller.poll(0):
            ready_call = by_fd.get(fd)
            if ready_call is not None and events & _READ and ready_call.pump():
                del by_fd[fd]
                ready_call.finish()
    return list(by_fd.values()), overdue


def _ssl_pending(by_fd: dict[int, Call]) -> list[tuple[int, int]]:
    return [(fd, select.POLLIN) for fd, call in by_fd.items()
            if call.conn is not None and call.conn.ssl and call.conn.sock.pending()]


def _run_late(call: Call) -> Sequence[tuple[Any, ...]] | None:
    assert call.late is not None
    try:
        return call.late(call.replies)
    except Exception:  # noqa: BLE001 - a late handler must not stop the late reader
        log.exception("ringkit: a late reply handler raised")
        return None


def _late_step(call: Call, readable: bool) -> bool:
    """Move a late call on without blocking: write what waits, read what came, run its late
    handler once every reply is in (sending its follow-ups on the same connection). True once
    the call owes nothing (or failed)."""
    conn = call.conn
    if conn is None:
        return True
    try:
        if conn.writing:
            conn.flush()
        if not readable:
            return False
        finished = call.pump()
        if finished and call.conn is not None and call.late is not None \
                and not call._late_ran:
            call._late_ran = True
            follow = _run_late(call)
            if follow:
                call.follow_up(follow)
                finished = call._collect(False)
        return finished
    except Exception as exc:  # noqa: BLE001
        call.fail(exc)
        return True


class _Reaper:
    """The late reader: one thread per process that takes over the late calls that no round
    finished within _GRACE of their hand-off, reads their replies when they come, runs their
    late handlers, sends the follow-ups on the same connection, and gives each connection back
    once it owes nothing (or closes it when the replies do not come in time)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._links: set[Link] = set()       # links with deferred calls
        self._closing: list[Link] = []
        self._asleep = False
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def _ensure(self) -> None:
        # Caller holds the guard.
        if self._pid == os.getpid() and self._thread is not None:
            return
        self._pid = os.getpid()
        self._links = set()
        self._closing = []
        self._asleep = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._run, args=(self._wake_r,),
                                        name="ringkit-redis-late", daemon=True)
        self._thread.start()

    def watch(self, link: Link) -> None:
        """`link` has a deferred call: look at it after _GRACE."""
        with self._guard:
            self._ensure()
            self._links.add(link)
            if self._asleep:
                self._asleep = False
                self._wake()

    def close_link(self, link: Link) -> None:
        with self._guard:
            if self._thread is None or self._pid != os.getpid():
                return
            self._closing.append(link)
            self._asleep = False
            self._wake()

    def _wake(self) -> None:
        try:
            assert self._wake_w is not None
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _run(self, wake: socket.socket) -> None:
        poller = select.poll()
        poller.register(wake.fileno(), select.POLLIN)
        calls: dict[int, Call] = {}
        while True:
            now = time.monotonic()
            soonest = math.inf
            for call in calls.values():
                soonest = min(soonest, call._until,
                              call.deadline if call.state == "late" else math.inf)
            with self._guard:
                if self._links:
                    soonest = min(soonest, now + _GRACE)
                elif soonest == math.inf:
                    self._asleep = True
            timeout = -1 if soonest == math.inf else max(0, int((soonest - now) * 1000) + 1)
            try:
                events = poller.poll(timeout)
            except InterruptedError:  # pragma: no cover
                continue
            closing: list[Link] = []
            for fd, ev in events:
                if fd == wake.fileno():
                    try:
                        wake.recv(4096)
                    except (BlockingIOError, OSError):
                        pass
                    with self._guard:
                        closing, self._closing = self._closing, []
                    continue
                owed = calls.get(fd)
                if owed is None or owed.conn is None:
                    continue
                if ev & _WRITE:
                    try:
                        owed.conn.flush()
                    except Exception as exc:  # noqa: BLE001
                        owed.fail(exc)
                        self._drop(poller, calls, fd, close=False)
                        continue
                    if not owed.conn.writing:
                        poller.modify(fd, _READ)
                if ev & _READ:
                    if _late_step(owed, True):
                        self._drop(poller, calls, fd, close=False)
                    elif owed.conn is not None and owed.conn.writing:
                        poller.modify(fd, _READ | _WRITE)
            for link in closing:
                for cfd, call in list(calls.items()):
                    if call.link is link:
                        self._drop(poller, calls, cfd, close=True)
            now = time.monotonic()
            self._adopt(poller, calls, now)
            for fd, call in list(calls.items()):
                if call._until <= now:
                    log.debug("ringkit: %s never answered a late call; closing it", call.link.name)
                    self._drop(poller, calls, fd, close=True)
                elif call.deadline <= now and call.state == "late":
                    call.state = "overdue"       # slower than its timeout: probe, then use
                    call.link.failed()

    def _adopt(self, poller: Any, calls: dict[int, Call], now: float) -> None:
        """Take over the deferred calls older than _GRACE from every watched link."""
        with self._guard:
            links = list(self._links)
        for link in links:
            for call in link.take_deferred(now):
                conn = call.conn
                if conn is None:
                    link.late_finished()
                    continue
                calls[conn.fd] = call
                poller.register(conn.fd, _READ | _WRITE if conn.writing else _READ)
            with link._guard:
                if not link._deferred:
                    with self._guard:
                        self._links.discard(link)

    @staticmethod
    def _drop(poller: Any, calls: dict[int, Call], fd: int, *, close: bool) -> None:
        call = calls.pop(fd)
        try:
            poller.unregister(fd)
        except (KeyError, ValueError):  # pragma: no cover
            pass
        conn, call.conn = call.conn, None
        link = call.link
        if conn is not None:
            if close:
                conn.close()
            else:
                link.give(conn, call._gen)
        link.late_finished()


_REAPER = _Reaper()


def _after_fork_in_child() -> None:
    global _REAPER, _FORKS
    _REAPER = _Reaper()
    _FORKS += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------------------------------
# Async transport


class AsyncLink:
    """:class:`Link` for asyncio: ringkit's own ``redis.asyncio`` connections to one server."""

    def __init__(self, client: Any, timeout: float, name: str | None = None) -> None:
        _require_redis()
        self.client = client
        self.timeout = float(timeout)
        self.name = name or server_name(client)
        self._class, self._kwargs, self._fast = _connection_kwargs(client, self.timeout,
                                                                   asynchronous=True)
        self._idle: list[Any] = []
        self._late: set[asyncio.Task[Any]] = set()
        self._suspect = False
        self._probe: asyncio.Task[Any] | None = None
        self._generation = 0

    def new_connection(self) -> Any:
        return self._class(**self._kwargs)

    def take(self, must: bool = False) -> Any:
        """An idle connection, or a new one, or None when the server is skipped (it failed and
        is being probed, or owes late replies on _MAX_LATE connections); `must`: never None."""
        if self._suspect and not must:
            self._start_probe()
            return None
        while self._idle:
            conn = self._idle.pop()
            if conn.is_connected:
                return conn
        if len(self._late) >= _MAX_LATE and not must:
            return None
        return self.new_connection()

    def give(self, conn: Any, generation: int) -> None:
        if generation == self._generation:
            self._suspect = False
            self._idle.append(conn)
        else:
            _close_soon(conn)

    def failed(self) -> None:
        self._suspect = True
        self._start_probe()

    def _start_probe(self) -> None:
        if self._probe is not None and not self._probe.done():
            return
        try:
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop())
        except RuntimeError:  # pragma: no cover - no loop running: the next call probes
            self._probe = None

    async def _probe_loop(self) -> None:
        wait = _PROBE_FIRST
        while self._suspect:
            await asyncio.sleep(wait)
            conn = self.new_connection()
            try:
                await asyncio.wait_for(self._ping(conn), self.timeout)
            except Exception:  # noqa: BLE001 - still down
                await _disconnect(conn)
                wait = min(wait * 2, max(self.timeout, _PROBE_FIRST))
                continue
            self._suspect = False
            self._idle.append(conn)

    def revive(self) -> None:
        self._suspect = False

    @staticmethod
    async def _ping(conn: Any) -> None:
        await conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n", check_health=False)
        await conn.read_response()

    @property
    def skipped(self) -> bool:
        return self._suspect or (not self._idle and len(self._late) >= _MAX_LATE)

    async def aclose(self) -> None:
        """Close every connection, and stop waiting for late replies."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for task in list(self._late):
            task.cancel()
        if self._probe is not None:
            self._probe.cancel()
        for conn in idle:
            await _disconnect(conn)
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)


async def _disconnect(conn: Any) -> None:
    try:
        await conn.disconnect()
    except Exception:  # noqa: BLE001
        pass


def _close_soon(conn: Any) -> None:
    try:
        asyncio.get_running_loop().create_task(_disconnect(conn))
    except RuntimeError:  # pragma: no cover
        pass


class AsyncCall:
    """:class:`Call` for asyncio: the same fields; ``run()`` is the whole call as a task."""

    __slots__ = ("link", "commands", "scripts", "late", "late_for", "limit", "must", "replies",
                 "error", "finished", "over", "started", "deadline", "state")

    def __init__(self, link: AsyncLink, commands: Sequence[tuple[Any, ...]],
                 scripts: dict[str, str] | None = None, late: Late | None = None,
                 late_for: float | None = None) -> None:
        self.link = link
        self.commands = commands
        self.scripts = scripts
        self.late = late
        self.late_for = late_for
        self.limit: float | None = None
        self.must = False
        self.replies: list[Any] = []
        self.error: BaseException | None = None
        self.finished = False
        self.over = False        # the round ended without this call's replies
        self.started = 0.0
        self.deadline = 0.0
        self.state: str | None = None

    @property
    def done(self) -> bool:
        return self.finished

    @property
    def ok(self) -> bool:
        return self.finished and self.error is None

    def result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        if self.state == "late" or not self.finished:
            raise _timeout_error(f"{self.link.name}: the round ended before its reply")
        return self.replies

    async def run(self) -> None:
        link = self.link
        conn = link.take(self.must)
        if conn is None:
            why = ("its last call failed; it is being probed" if link._suspect
                   else "busy: it still owes replies to earlier rounds")
            self.error = ServerSkipped(f"{link.name}: skipped ({why})", busy=not link._suspect)
            self.finished = True
            return
        generation = link._generation
        try:
            await self._exchange(conn, self.commands, self.replies)
            reload = (_script_reload(self.commands, self.replies, self.scripts)
                      if self.scripts else None)
            if reload is not None and self.scripts:
                missing, resend = reload
                again: list[Any] = []
                await self._exchange(conn, resend, again)
                _script_reloaded(self.replies, missing, again, self.scripts)
            if self.over and self.late is not None:
                follow = None
                try:
                    follow = self.late(self.replies)
                except Exception:  # noqa: BLE001
                    log.exception("ringkit: a late reply handler raised")
                if follow:
                    await self._exchange(conn, follow, [])
        except BaseException as exc:
            await _disconnect(conn)
            if not self.finished:
                self.error = exc if isinstance(exc, Exception) else _timeout_error(
                    f"{link.name}: call cancelled")
                link.failed()
            self.finished = True
            if not isinstance(exc, Exception):
                raise
            return
        self.finished = True
        link.give(conn, generation)

    @staticmethod
    async def _exchange(conn: Any, commands: Sequence[tuple[Any, ...]], out: list[Any]) -> None:
        from redis.exceptions import ResponseError

        await conn.send_packed_command(pack(commands), check_health=False)
        for _ in commands:
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:
                out.append(exc)


async def gather_async(calls: Sequence[AsyncCall],
                       decided: Callable[[], bool] | None = None) -> None:
    """:func:`gather` for asyncio. The round itself is shielded from the caller's
    cancellation: a cancelled caller leaves every call running to its end (late handlers
    included), so a grant is never left behind unseen."""
    loop = asyncio.get_running_loop()
    now = time.monotonic()
    tasks: dict[asyncio.Task[Any], AsyncCall] = {}
    for call in calls:
        call.started = now
        call.deadline = now + (call.link.timeout if call.limit is None
                               else min(call.link.timeout, call.limit))
        task = loop.create_task(_bounded(call))
        tasks[task] = call
    pending = set(tasks)
    try:
        while pending:
            if decided is not None and decided():
                break
            left = max(c.deadline for t, c in tasks.items() if t in pending) - time.monotonic()
            if left <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=left,
                                               return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        for task in pending:
            if not tasks[task].finished:
                _keep_late(tasks[task], task)
        raise
    now = time.monotonic()
    for task, call in tasks.items():
        # A call whose task has not been reaped yet may have read every reply already.
        if call.finished or task not in pending:
            call.state = "ok" if call.error is None else "failed"
            continue
        if now >= call.deadline and call.error is None:
            call.error = _timeout_error(f"{call.link.name}: no reply within {call.link.timeout} s")
            call.link.failed()
        call.state = "failed" if call.error is not None else "late"
        _keep_late(call, task)


def _keep_late(call: AsyncCall, task: asyncio.Task[Any]) -> None:
    call.over = True
    link = call.link
    link._late.add(task)
    task.add_done_callback(link._late.discard)


async def _bounded(call: AsyncCall) -> None:
    wait = call.late_for if call.late_for is not None else call.link.timeout
    until = max(call.deadline, call.started + wait)
    try:
        await asyncio.wait_for(call.run(), max(0.001, until - time.monotonic()))
    except asyncio.TimeoutError:
        if call.error is None:
            call.error = _timeout_error(f"{call.link.name}: no reply within "
                                        f"{call.link.timeout} s")
        call.finished = True
        call.link.failed()

