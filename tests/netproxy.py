"""A partition nemesis for the fault tests: a loopback TCP proxy per client->server link.

The lock and replication fault tests need Jepsen-style network faults between ringkit and its
``redis-server`` processes, not only dead or paused servers: a partition that swallows one
direction (the command reaches the server, the reply never comes back), a slow link, a link
that resets every connection. Each :class:`Link` is a listening port on 127.0.0.1 that
forwards to one target server; the client under test connects to ``link.url`` instead of the
server's own URL, and the test switches the link at run time:

    with Proxy() as proxy:
        link = proxy.link(server.port)       # clients use link.url / link.port
        link.blackhole("down")               # replies are held, commands still executed
        link.delay(50, "up")                 # commands arrive 50 ms late
        link.reset()                         # RST every connection, new ones too
        link.heal()                          # everything held is delivered, in order

Modes, per direction (``up`` = client->server bytes, ``down`` = server->client bytes):

``pass``
    forward at once.
``blackhole``
    connections are still accepted, but nothing is delivered in that direction: the bytes
    read are *held*, in order, and delivered when the direction goes back to ``pass`` or
    ``delay:N`` (as TCP would retransmit them once a partition heals). A close (FIN) or a
    reset from the sending side is held behind its data the same way.
``delay:N``
    every chunk is delivered N milliseconds (a float >= 0) after it was read, order preserved.

A mode change is applied before :meth:`Link.set` returns: after ``link.blackhole("down")``
returns, the proxy delivers no further server->client byte. (Bytes it had already handed to
the kernel before that are in flight, as on a real network.)

The forwarding runs in a separate process (``python tests/netproxy.py serve``), a
single-threaded ``selectors`` loop over non-blocking sockets, so that it is not starved by the
busy Python threads of the test process. The test side drives it over the child's stdin and
stdout, one JSON object per line (a request, then exactly one reply with ``"ok": true`` or an
``"error"`` text). The child exits by itself when its stdin closes (the parent died), and every
child still running is killed at interpreter exit, so no proxy process is ever left behind.

Standard library only.
"""

from __future__ import annotations

import atexit
import errno
import heapq
import itertools
import json
import math
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Proxy", "Link", "parse_mode", "DIRECTIONS"]

HOST = "127.0.0.1"
DIRECTIONS = ("up", "down")
READ_SIZE = 64 * 1024            # one recv() at most
OUT_LIMIT = 1024 * 1024          # stop reading a source while this much waits for its destination
REQUEST_TIMEOUT = 10.0           # seconds for the proxy process to answer one control request
STOP_TIMEOUT = 5.0               # seconds for the proxy process to exit before it is killed

# ---------------------------------------------------------------------------------------------
# Modes (shared by both sides)
# ---------------------------------------------------------------------------------------------

PASS, BLACKHOLE, DELAY = "pass", "blackhole", "delay"
Mode = tuple[str, float]         # (kind, delay in seconds; 0.0 unless kind is "delay")


def parse_mode(argument: str, value: object) -> Mode:
    """Parse a mode text (``"pass"``, ``"blackhole"``, ``"delay:N"``) given for `argument`;
    a ValueError names the argument."""
    if not isinstance(value, str):
        raise ValueError(f"{argument}: mode must be a string ('pass', 'blackhole' or "
                         f"'delay:N'), got {value!r}")
    if value == PASS:
        return (PASS, 0.0)
    if value == BLACKHOLE:
        return (BLACKHOLE, 0.0)
    if value.startswith(DELAY + ":"):
        text = value[len(DELAY) + 1:]
        try:
            ms = float(text)
        except ValueError:
            raise ValueError(f"{argument}: delay must be a number of milliseconds, got "
                             f"{value!r}") from None
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"{argument}: delay must be a finite number of milliseconds >= 0, "
                             f"got {value!r}")
        return (DELAY, ms / 1000.0)
    raise ValueError(f"{argument}: unknown mode {value!r}; expected 'pass', 'blackhole' or "
                     f"'delay:N' (N milliseconds >= 0)")


def _directions(direction: object) -> tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (str(direction),)
    raise ValueError(f"direction: must be 'up', 'down' or 'both', got {direction!r}")


# ---------------------------------------------------------------------------------------------
# Server side: the proxy process
# ---------------------------------------------------------------------------------------------

_EOF = 1          # markers in a direction's queue, behind the data read before them
_RST = 2
_RST_LINGER = struct.pack("ii", 1, 0)


def _abort_socket(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the peer gets a RST, not a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    except OSError:
        pass
    sock.close()


class _Dir:
    """One direction of a connection pair: bytes read from `src`, written to `dst`."""

    __slots__ = ("pair", "index", "src", "dst", "pending", "held", "out", "src_done",
                 "out_eof", "out_rst", "dst_shut", "dst_dead", "timer_at")

    def __init__(self, pair: _Pair, index: int, src: socket.socket, dst: socket.socket) -> None:
        self.pair = pair
        self.index = index                 # 0 = up, 1 = down
        self.src = src
        self.dst = dst
        self.pending: deque[tuple[float, bytes | int]] = deque()   # (read at, data or marker)
        self.held = 0                      # bytes in `pending`
        self.out = bytearray()             # released, waiting for `dst` to be writable
        self.src_done = False              # EOF or error read from src: read no more
        self.out_eof = False               # FIN released: shut dst down once `out` is sent
        self.out_rst = False               # RST released: abort the pair once `out` is sent
        self.dst_shut = False
        self.dst_dead = False              # dst failed: whatever goes to it is dropped
        self.timer_at: float | None = None


class _Pair:
    """A client connection and its connection to the target."""

    __slots__ = ("link", "client", "server", "connected", "up", "down", "closed", "masks")

    def __init__(self, link: _LinkState, client: socket.socket, server: socket.socket) -> None:
        self.link = link
        self.client = client
        self.server = server
        self.connected = False
        self.up = _Dir(self, 0, client, server)
        self.down = _Dir(self, 1, server, client)
        self.closed = False
        self.masks: dict[socket.socket, int] = {client: 0, server: 0}


class _LinkState:
    __slots__ = ("id", "listener", "target", "family", "sockaddr", "modes", "reset_mode",
                 "pairs", "connections", "bytes")

    def __init__(self, link_id: int, listener: socket.socket, target: tuple[str, int],
                 family: int, sockaddr: Any) -> None:
        self.id = link_id
        self.listener = listener
        self.target = target
        self.family = family
        self.sockaddr = sockaddr
        self.modes: list[Mode] = [(PASS, 0.0), (PASS, 0.0)]
        self.reset_mode = False
        self.pairs: set[_Pair] = set()
        self.connections = 0
        self.bytes = [0, 0]                # read from clients, read from the target


class _Server:
    """The event loop of the proxy process."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.links: dict[int, _LinkState] = {}
        self.next_id = itertools.count(1)
        self.timers: list[tuple[float, int, _Dir]] = []
        self.timer_seq = itertools.count()
        self.control_buf = b""
        self.running = True

    # -- loop -------------------------------------------------------------------------------------

    def run(self) -> None:
        os.set_blocking(0, False)
        self.sel.register(0, selectors.EVENT_READ, None)
        while self.running:
            timeout: float | None = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - time.monotonic())
            for key, mask in self.sel.select(timeout):
                handler: Callable[[int], None] | None = key.data
                if handler is None:
                    self.on_control()
                    if not self.running:
                        break
                else:
                    handler(mask)
            if self.timers:
                self.run_timers()
        self.shutdown()

    def run_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            due, _, d = heapq.heappop(self.timers)
            if d.timer_at == due:
                d.timer_at = None
            if not d.pair.closed:
                self.guard(d.pair, self.pump, d)

    def guard(self, pair: _Pair, fn: Callable[..., None], *args: Any) -> None:
        """Run fn; an unexpected error aborts that pair only (and is logged), never the loop."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one broken pair must not stop the proxy
            traceback.print_exc(file=sys.stderr)
            self.abort(pair)

    def shutdown(self) -> None:
        for link in list(self.links.values()):
            self.close_link(link)
        self.sel.close()

    # -- control channel --------------------------------------------------------------------------

    def on_control(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:                       # the parent closed our stdin, or died
            self.running = False
            return
        self.control_buf += data
        while b"\n" in self.control_buf:
            line, self.control_buf = self.control_buf.split(b"\n", 1)
            if line.strip():
                self.reply(self.handle(line))
            if not self.running:
                return

    def reply(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            try:
                n = os.write(1, data)
            except BlockingIOError:
                select.select([], [1], [], 1.0)
                continue
            data = data[n:]

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError(f"request must be a JSON object, got {line[:100]!r}")
            cmd = request.get("cmd")
            method = getattr(self, f"cmd_{cmd}", None) if isinstance(cmd, str) else None
            if method is None:
                raise ValueError(f"cmd: unknown command {cmd!r}")
            result: dict[str, Any] = method(request)
            result["ok"] = True
            return result
        except ValueError as exc:
            return {"ok": False, "type": "ValueError", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - bad input never kills the proxy
            name = type(exc).__name__
            return {"ok": False, "type": name, "error": f"{name}: {exc}"}

    def get_link(self, request: dict[str, Any]) -> _LinkState:
        link = self.links.get(request.get("link"))  # type: ignore[arg-type]
        if link is None:
            raise LookupError(f"link {request.get('link')!r} does not exist (closed?)")
        return link

    def cmd_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def cmd_quit(self, request: dict[str, Any]) -> dict[str, Any]:
        self.running = False
        return {}

    def cmd_link(self, request: dict[str, Any]) -> dict[str, Any]:
        host, port = request.get("host"), request.get("port")
        if not isinstance(host, str) or not host:
            raise ValueError(f"target_host: must be a non-empty string, got {host!r}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"target_port: must be an integer in 1..65535, got {port!r}")
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise ValueError(f"target_host: {host!r} does not resolve")
        family, _, _, _, sockaddr = infos[0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1024)
        listener.setblocking(False)
        link = _LinkState(next(self.next_id), listener, (host, port), family, sockaddr)
        self.links[link.id] = link
        self.sel.register(listener, selectors.EVENT_READ, lambda mask: self.on_accept(link))
        return {"link": link.id, "port": listener.getsockname()[1]}

    def cmd_set(self, request: dict[str, Any]) -> dict[str, Any]:
        link = self.get_link(request)
        new: list[Mode | None] = []
        for name in DIRECTIONS:        # validate both before changing anything
            value = request.get(name)
            new.append(None if value is None else parse_mode(name, value))
        link.reset_mode = False
        for index, mode in enumerate(new):
            if mode is None or mode == link.modes[index]:
                continue
            link.modes[index] = mode
            for pair in list(link.pairs):
                if pair.closed:
                    continue
                d = pair.up if index == 0 else pair.down
                if mode[0] == BLACKHOLE:
                    self.guard(pair, self.recall, d)
                else:
                    self.guard(pair, self.pump, d)
        return {}

    def cmd_reset(self, request: dict[str, Any]) -> dict[str, Any]:
        link = self.get_link(request)
        link.reset_mode = True
        for pair in list(link.pairs):
            self.abort(pair)
        return {}

    def cmd_stats(self, request: dict[str, Any]) -> dict[str, Any]:
        link = self.get_link(request)
        held = [0, 0]
        for pair in link.pairs:
            held[0] += pair.up.held + len(pair.up.out)
            held[1] += pair.down.held + len(pair.down.out)
        return {"stats": {"connections": link.connections, "open": len(link.pairs),
                          "up_bytes": link.bytes[0], "down_bytes": link.bytes[1],
                          "held_up": held[0], "held_down": held[1]},
                "modes": [mode_text(m) for m in link.modes], "reset": link.reset_mode}

    def cmd_close(self, request: dict[str, Any]) -> dict[str, Any]:
        self.close_link(self.get_link(request))
        return {}

    def close_link(self, link: _LinkState) -> None:
        self.links.pop(link.id, None)
        try:
            self.sel.unregister(link.listener)
        except (KeyError, ValueError):
            pass
        link.listener.close()
        for pair in list(link.pairs):
            self.abort(pair)

    # -- connections ------------------------------------------------------------------------------

    def on_accept(self, link: _LinkState) -> None:
        for _ in range(64):
            try:
                client, _ = link.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:                # e.g. EMFILE, ECONNABORTED: try again later
                return
            link.connections += 1
            if link.reset_mode:
                _abort_socket(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            server = socket.socket(link.family, socket.SOCK_STREAM)
            server.setblocking(False)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = server.connect_ex(link.sockaddr)
            if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
                server.close()
                _abort_socket(client)
                continue
            pair = _Pair(link, client, server)
            pair.connected = err == 0
            link.pairs.add(pair)
            self.sel.register(client, selectors.EVENT_READ,
                              lambda mask, p=pair: self.on_client(p, mask))
            pair.masks[client] = selectors.EVENT_READ
            self.sel.register(server, selectors.EVENT_WRITE,
                              lambda mask, p=pair: self.on_server(p, mask))
            pair.masks[server] = selectors.EVENT_WRITE
            if pair.connected:
                self.update(pair)

    def on_client(self, pair: _Pair, mask: int) -> None:
        if pair.closed:
            return
        try:
            if mask & selectors.EVENT_READ:
                self.read(pair.up)
            if mask & selectors.EVENT_WRITE and not pair.closed:
                self.flush(pair.down)
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            self.abort(pair)

    def on_server(self, pair: _Pair, mask: int) -> None:
        if pair.closed:
            return
        try:
            if not pair.connected:
                err = pair.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:                    # refused or unreachable: RST the client
                    self.abort(pair)
                    return
                pair.connected = True
                self.flush(pair.up)
                if not pair.closed:
                    self.update(pair)
                return
            if mask & selectors.EVENT_READ:
                self.read(pair.down)
            if mask & selectors.EVENT_WRITE and not pair.closed:
                self.flush(pair.up)
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            self.abort(pair)

    def read(self, d: _Dir) -> None:
        try:
            data = d.src.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.src_failed(d)
            return
        pair = d.pair
        if not data:
            d.src_done = True
            self.enqueue_marker(d, _EOF)
            if not pair.closed:
                self.update(pair)
            return
        pair.link.bytes[d.index] += len(data)
        if d.dst_dead:
            return
        kind = pair.link.modes[d.index][0]
        if kind == PASS and not d.pending:
            if not d.out and pair.connected:          # fast path: straight through
                try:
                    n = d.dst.send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    self.dst_failed(d)
                    return
                if n == len(data):
                    return
                data = data[n:]
            d.out += data
            if len(d.out) >= OUT_LIMIT or not (pair.masks[d.dst] & selectors.EVENT_WRITE):
                self.update(pair)
            return
        d.pending.append((time.monotonic(), data))
        d.held += len(data)
        if kind != BLACKHOLE:
            self.pump(d)

    def enqueue_marker(self, d: _Dir, marker: int) -> None:
        d.pending.append((time.monotonic(), marker))
        self.pump(d)

    def pump(self, d: _Dir) -> None:
        """Release what the direction's mode lets through, oldest first, then flush it."""
        if d.pair.closed:
            return
        kind, delay = d.pair.link.modes[d.index]
        if kind == BLACKHOLE:
            return
        now = time.monotonic()
        pending = d.pending
        while pending:
            read_at, item = pending[0]
            if kind == DELAY and read_at + delay > now:
                due = read_at + delay
                if d.timer_at is None or d.timer_at > due:
                    d.timer_at = due
                    heapq.heappush(self.timers, (due, next(self.timer_seq), d))
                break
            pending.popleft()
            if isinstance(item, bytes):
                d.held -= len(item)
                if not d.dst_dead:
                    d.out += item
            elif item == _EOF:
                d.out_eof = True
            else:
                d.out_rst = True
        self.flush(d)

    def recall(self, d: _Dir) -> None:
        """The direction was just blackholed: take back what was released but not yet written
        to the socket, so that nothing more is delivered."""
        front: list[tuple[float, bytes | int]] = []
        if d.out:
            front.append((0.0, bytes(d.out)))
            d.held += len(d.out)
            d.out.clear()
        if d.out_eof and not d.dst_shut:
            front.append((0.0, _EOF))
            d.out_eof = False
        if d.out_rst:
            front.append((0.0, _RST))
            d.out_rst = False
        d.pending.extendleft(reversed(front))
        self.update(d.pair)

    def flush(self, d: _Dir) -> None:
        pair = d.pair
        if pair.closed or (d.index == 0 and not pair.connected):
            return
        if d.out:
            if d.dst_dead:
                d.out.clear()
            else:
                try:
                    n = d.dst.send(d.out)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    self.dst_failed(d)
                    return
                del d.out[:n]
        if not d.out:
            if d.out_eof and not d.dst_shut:
                d.dst_shut = True
                if not d.dst_dead:
                    try:
                        d.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            if d.out_rst:
                self.abort(pair)
                return
            other = pair.down if d is pair.up else pair.up
            if d.dst_shut and other.dst_shut and not other.out:
                self.close_pair(pair)
                return
        self.update(pair)

    def src_failed(self, d: _Dir) -> None:
        """Reading d.src failed (reset by its peer): hold a RST behind its data, and drop
        whatever the other direction still has for that dead socket."""
        pair = d.pair
        other = pair.down if d is pair.up else pair.up
        d.src_done = True
        other.dst_dead = True
        other.out.clear()
        other.pending = deque(item for item in other.pending if not isinstance(item[1], bytes))
        other.held = 0
        self.enqueue_marker(d, _RST)
        if not pair.closed:
            self.update(pair)

    def dst_failed(self, d: _Dir) -> None:
        """Writing to d.dst failed: that socket is dead, as if reading it had failed."""
        other = d.pair.down if d is d.pair.up else d.pair.up
        if not other.src_done:
            self.src_failed(other)
        else:
            d.dst_dead = True
            d.out.clear()
            self.enqueue_marker(other, _RST)

    def update(self, pair: _Pair) -> None:
        """Register each socket for what its directions are waiting for."""
        if pair.closed:
            return
        up, down = pair.up, pair.down
        client_mask = 0
        if not up.src_done and len(up.out) < OUT_LIMIT:
            client_mask |= selectors.EVENT_READ
        if down.out and not down.dst_dead:
            client_mask |= selectors.EVENT_WRITE
        if not pair.connected:
            server_mask = selectors.EVENT_WRITE
        else:
            server_mask = 0
            if not down.src_done and len(down.out) < OUT_LIMIT:
                server_mask |= selectors.EVENT_READ
            if up.out and not up.dst_dead:
                server_mask |= selectors.EVENT_WRITE
        self.set_mask(pair, pair.client, client_mask, self.on_client)
        self.set_mask(pair, pair.server, server_mask, self.on_server)

    def set_mask(self, pair: _Pair, sock: socket.socket, mask: int,
                 handler: Callable[[_Pair, int], None]) -> None:
        old = pair.masks[sock]
        if mask == old:
            return
        if old == 0:
            self.sel.register(sock, mask, lambda m, p=pair: handler(p, m))
        elif mask == 0:
            self.sel.unregister(sock)
        else:
            self.sel.modify(sock, mask, self.sel.get_key(sock).data)
        pair.masks[sock] = mask

    def _release(self, pair: _Pair) -> bool:
        if pair.closed:
            return False
        pair.closed = True
        pair.link.pairs.discard(pair)
        for sock, mask in pair.masks.items():
            if mask:
                try:
                    self.sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
        return True

    def abort(self, pair: _Pair) -> None:
        """Close both sides with a RST."""
        if self._release(pair):
            _abort_socket(pair.client)
            _abort_socket(pair.server)

    def close_pair(self, pair: _Pair) -> None:
        if self._release(pair):
            pair.client.close()
            pair.server.close()


def mode_text(mode: Mode) -> str:
    kind, delay = mode
    return f"{DELAY}:{delay * 1000.0:g}" if kind == DELAY else kind


def serve() -> None:
    """The proxy process: serve control requests on stdin until it closes (or ``quit``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # a Ctrl-C in the test run is the parent's
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _Server().run()


# ---------------------------------------------------------------------------------------------
# Test side
# ---------------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}   # pid -> proxy process, for the exit hook


class ProxyError(RuntimeError):
    """The proxy process failed a request for another reason than a bad argument."""


class Proxy:
    """One proxy process, serving any number of links (see the module docstring).

    It starts at construction; :meth:`close` (or leaving a ``with`` block) stops it, killing it
    by pid if it does not exit. Safe to drive from several threads (one request at a time).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._links: list[Link] = []
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        self.pid: int = self._proc.pid
        _LIVE[self.pid] = self._proc
        try:
            self._request({"cmd": "ping"})
        except BaseException:
            self.close()
            raise

    @property
    def running(self) -> bool:
        """Whether the proxy process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def link(self, target_port: int, target_host: str = HOST) -> Link:
        """A new listening port on 127.0.0.1 forwarding to (target_host, target_port), with
        both directions in ``pass``."""
        reply = self._request({"cmd": "link", "host": target_host, "port": target_port})
        link = Link(self, int(reply["link"]), int(reply["port"]), (target_host, target_port))
        self._links.append(link)
        return link

    def close(self) -> None:
        """Stop the process (killed by pid if it does not exit) and close every link."""
        process, self._proc = self._proc, None
        for link in self._links:
            link.closed = True
        if process is None:
            return
        try:
            if process.poll() is None:
                try:
                    assert process.stdin is not None
                    process.stdin.close()       # the server exits when its stdin closes
                except OSError:
                    pass
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            _LIVE.pop(process.pid, None)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Proxy pid={self.pid} {'running' if self.running else 'stopped'}>"

    # -- control channel --------------------------------------------------------------------------

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            process = self._proc
            if process is None or process.poll() is not None:
                raise ProxyError(f"the proxy process (pid {self.pid}) is not running")
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write((json.dumps(request) + "\n").encode())
            except OSError as exc:
                raise ProxyError(f"the proxy process (pid {self.pid}) is gone: {exc}") from exc
            line = self._readline(process)
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))
            if reply.get("type") == "ValueError":
                raise ValueError(error)
            raise ProxyError(error)
        return reply

    def _readline(self, process: subprocess.Popen[bytes]) -> bytes:
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyError(f"the proxy process (pid {self.pid}) did not answer within "
                                 f"{REQUEST_TIMEOUT} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ProxyError(f"the proxy process (pid {self.pid}) exited "
                                 f"({process.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line


class Link:
    """One listening port of a :class:`Proxy`, forwarding to one target.

    Clients connect to :attr:`port` (or :attr:`url`); the test switches the link with
    :meth:`set`, :meth:`blackhole`, :meth:`delay`, :meth:`reset` and :meth:`heal`. Every call
    returns once the proxy has applied it.
    """

    def __init__(self, proxy: Proxy, link_id: int, port: int, target: tuple[str, int]) -> None:
        self.proxy = proxy
        self.id = link_id
        self.port: int = port
        self.target: tuple[str, int] = target
        self.closed = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``: the target as seen through this link."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def name(self) -> str:
        """The link as ringkit names a server from its URL."""
        return f"{HOST}:{self.port}/0"

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.closed:
            raise ProxyError(f"link {self.name} is closed")
        request["link"] = self.id
        return self.proxy._request(request)

    def set(self, *, up: str | None = None, down: str | None = None) -> None:
        """Set the mode of each direction (``"pass"``, ``"blackhole"``, ``"delay:N"``; None
        leaves it as it is) and turn reset mode off. Bytes held by a blackhole are delivered,
        in order, when their direction goes back to ``pass`` or ``delay:N``."""
        for argument, value in (("up", up), ("down", down)):
            if value is not None:
                parse_mode(argument, value)       # the ValueError names the argument
        self._request({"cmd": "set", "up": up, "down": down})

    def heal(self) -> None:
        """Both directions ``pass`` (held bytes delivered), reset mode off."""
        self.set(up=PASS, down=PASS)

    def blackhole(self, direction: str = "both") -> None:
        """Hold every byte in `direction` (``"up"``, ``"down"`` or ``"both"``) until healed."""
        self.set(**{d: BLACKHOLE for d in _directions(direction)})

    def delay(self, ms: float, direction: str = "both") -> None:
        """Deliver every chunk in `direction` `ms` milliseconds after it was read."""
        if isinstance(ms, bool) or not isinstance(ms, (int, float)):
            raise ValueError(f"ms: must be a number of milliseconds, got {ms!r}")
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"ms: must be a finite number of milliseconds >= 0, got {ms!r}")
        self.set(**{d: f"{DELAY}:{float(ms)!r}" for d in _directions(direction)})

    def reset(self) -> None:
        """Abort every open connection pair of this link on both sides (RST), and reset every
        new connection at once, until :meth:`set` or :meth:`heal` is called."""
        self._request({"cmd": "reset"})

    def stats(self) -> dict[str, int]:
        """``connections`` (accepted in total), ``open`` (pairs), ``up_bytes`` / ``down_bytes``
        (read from clients / from the target, held or not), ``held_up`` / ``held_down`` (read
        but not yet delivered, in open pairs)."""
        stats: dict[str, int] = self._request({"cmd": "stats"})["stats"]
        return stats

    def modes(self) -> dict[str, Any]:
        """The current modes: ``{"up": ..., "down": ..., "reset": bool}``."""
        reply = self._request({"cmd": "stats"})
        return {"up": reply["modes"][0], "down": reply["modes"][1], "reset": reply["reset"]}

    def close(self) -> None:
        """Stop listening and abort this link's connection pairs (RST)."""
        if self.closed:
            return
        if self.proxy.running:
            self._request({"cmd": "close"})
        self.closed = True

    def __repr__(self) -> str:
        return f"<Link {self.name} -> {self.target[0]}:{self.target[1]}>"


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


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit(f"usage: {sys.argv[0]} serve  (the proxy process; tests use netproxy.Proxy)")
