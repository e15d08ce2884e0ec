"""tests/netproxy.py, the partition nemesis: each mode really does what it says, against a real
redis-server, seen from the client (raw sockets, redis-py) and from the server directly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import netproxy  # noqa: E402 - registered by conftest.py
import pytest
import redis

Proxy = netproxy.Proxy

HANG = 5.0                                   # seconds: a guard against hangs, never a bound
PING = b"*1\r\n$4\r\nPING\r\n"
PONG = b"+PONG\r\n"


# -- helpers --------------------------------------------------------------------------------------


def command(*args: str | bytes | int) -> bytes:
    """One RESP command."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def connect(link: Any, timeout: float = HANG) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", link.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int, timeout: float = HANG) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}, expected {n} bytes")
        data += chunk
    return data


def round_trip(sock: socket.socket, request: bytes, reply: bytes) -> None:
    sock.sendall(request)
    assert recv_exactly(sock, len(reply)) == reply


def assert_silent(sock: socket.socket, wait: float = 0.1) -> None:
    """Nothing arrives (no data, no close) within `wait` seconds."""
    sock.settimeout(wait)
    with pytest.raises(socket.timeout):
        data = sock.recv(100)
        raise AssertionError(f"expected nothing, got {data!r}")


def assert_closed(sock: socket.socket, timeout: float = HANG) -> None:
    """The proxy closed the connection (RST, or FIN if it got there first)."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        return
    assert data == b"", f"expected the connection to be closed, got {data!r}"


def assert_reset(sock: socket.socket, timeout: float = HANG) -> None:
    sock.settimeout(timeout)
    with pytest.raises(ConnectionResetError):
        sock.sendall(PING)
        sock.recv(100)


def wait_for(condition: Callable[[], object], what: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def client(link: Any, timeout: float = HANG) -> Any:
    return redis.Redis(host="127.0.0.1", port=link.port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, retry=None)  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


# -- pass -----------------------------------------------------------------------------------------


@pytest.mark.redis
def test_pass_forwards_commands_and_replies(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    assert link.target == ("127.0.0.1", servers[0].port)
    assert link.url == f"redis://127.0.0.1:{link.port}/0"
    assert link.name == f"127.0.0.1:{link.port}/0"
    direct = servers[0].client()

    r = client(link)
    assert r.ping() is True
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert direct.get("k") == b"v"
    for i in range(1, 301):
        assert r.incr("n") == i
    pipe = r.pipeline(transaction=False)
    for _ in range(2000):
        pipe.incr("m")
    assert pipe.execute() == list(range(1, 2001))
    big = os.urandom(3 * 1024 * 1024)        # larger than any buffer: flow control both ways
    r.set("big", big)
    assert r.get("big") == big
    assert direct.get("n") == b"300"

    many = [client(link) for _ in range(100)]
    for i, c in enumerate(many):
        assert c.set(f"c{i}", i)
    assert direct.get("c99") == b"99"
    assert link.stats()["open"] == 101
    for c in many:
        c.close()
    r.close()


@pytest.mark.redis
def test_two_links_to_two_servers_are_independent(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(2)
    a, b = proxy.link(servers[0].port), proxy.link(servers[1].port)
    assert a.port != b.port
    ra, rb = client(a), client(b)
    ra.set("who", "a")
    rb.set("who", "b")
    assert servers[0].client().get("who") == b"a"
    assert servers[1].client().get("who") == b"b"

    a.blackhole()
    assert rb.incr("b-only") == 1          # b does not care about a's partition
    assert a.stats()["up_bytes"] < b.stats()["up_bytes"]
    a.heal()
    assert ra.get("who") == b"a"
    ra.close()
    rb.close()


# -- blackhole ------------------------------------------------------------------------------------


@pytest.mark.redis
def test_blackhole_up_holds_commands_until_healed(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    direct = servers[0].client()
    sock = connect(link)
    round_trip(sock, PING, PONG)

    link.blackhole("up")
    set_k = command("SET", "k", "v")
    sock.sendall(set_k)
    # a connection made during the partition is accepted, and its bytes are held as well
    late = connect(link)
    late.sendall(command("INCR", "late"))
    held = len(set_k) + len(command("INCR", "late"))
    wait_for(lambda: link.stats()["held_up"] == held, "the proxy to hold both commands")
    assert direct.get("k") is None               # held in the proxy: the server never saw it
    assert direct.get("late") is None
    assert_silent(sock)
    assert_silent(late)

    link.heal()
    assert recv_exactly(sock, 5) == b"+OK\r\n"   # delivered on heal, and answered
    assert recv_exactly(late, 4) == b":1\r\n"
    assert direct.get("k") == b"v"
    assert link.stats()["held_up"] == 0
    round_trip(sock, PING, PONG)
    sock.close()
    late.close()


@pytest.mark.redis
def test_blackhole_up_keeps_order_and_holds_the_close(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    direct = servers[0].client()
    sock = connect(link)
    round_trip(sock, PING, PONG)
    base = direct.client_list()

    link.blackhole("up")
    commands = b"".join(command("RPUSH", "order", i) for i in range(50))
    sock.sendall(commands)
    sock.shutdown(socket.SHUT_WR)                # the client's FIN is held behind its data
    wait_for(lambda: link.stats()["held_up"] == len(commands), "the commands to be held")
    time.sleep(0.05)
    assert direct.llen("order") == 0
    assert len(direct.client_list()) == len(base)   # the server still sees the connection

    link.heal()
    replies = b"".join(b":%d\r\n" % (i + 1) for i in range(50))
    assert recv_exactly(sock, len(replies)) == replies
    assert direct.lrange("order", 0, -1) == [str(i).encode() for i in range(50)]
    # the FIN reached the server after the data: it closes, and so does the proxy
    assert_closed(sock)
    wait_for(lambda: link.stats()["open"] == 0, "the pair to be closed")
    sock.close()


@pytest.mark.redis
def test_blackhole_down_executes_but_holds_replies(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    direct = servers[0].client()
    sock = connect(link)
    round_trip(sock, PING, PONG)

    link.blackhole("down")
    sock.sendall(command("SET", "k", "v") + command("INCR", "n") + command("INCR", "n"))
    wait_for(lambda: direct.get("n") == b"2", "the server to execute the commands")
    assert direct.get("k") == b"v"
    replies = b"+OK\r\n:1\r\n:2\r\n"
    wait_for(lambda: link.stats()["held_down"] == len(replies), "the replies to be held")
    assert_silent(sock)

    link.heal()
    assert recv_exactly(sock, len(replies)) == replies
    round_trip(sock, PING, PONG)
    sock.close()


@pytest.mark.redis
def test_blackhole_down_with_redis_py_times_out_then_heals(proxy: Any,
                                                          redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    r = client(link, timeout=0.2)
    assert r.ping()
    link.blackhole("down")
    with pytest.raises(redis.TimeoutError):
        r.set("k", "v")
    assert servers[0].client().get("k") == b"v"     # executed, only the reply was lost
    link.heal()
    assert r.get("k") == b"v"                      # redis-py reconnected
    r.close()


@pytest.mark.redis
def test_blackhole_down_holds_the_server_close(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    sock = connect(link)
    round_trip(sock, PING, PONG)

    link.blackhole("down")
    sock.sendall(command("QUIT"))                # the server replies +OK and closes
    wait_for(lambda: link.stats()["held_down"] == 5, "the reply to be held")
    time.sleep(0.05)                             # the server's FIN is in the proxy by now
    assert_silent(sock)                          # neither the reply nor the close get through

    link.heal()
    assert recv_exactly(sock, 5) == b"+OK\r\n"
    assert_closed(sock)
    sock.close()
    wait_for(lambda: link.stats()["open"] == 0, "the pair to be closed")


# -- delay ----------------------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize("direction", ["up", "down"])
def test_delay_one_direction(proxy: Any, redis_servers: Any, direction: str) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    r = client(link)
    assert r.ping()

    link.delay(50, direction)
    modes = link.modes()
    assert modes[direction] == "delay:50"
    assert modes["up" if direction == "down" else "down"] == "pass"
    start = time.monotonic()
    assert r.ping()
    elapsed = time.monotonic() - start
    assert 0.050 <= elapsed < HANG

    link.heal()
    assert r.ping()
    r.close()


@pytest.mark.redis
def test_delay_keeps_order(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    r = client(link)
    link.delay(20)                               # both directions
    start = time.monotonic()
    assert r.ping()
    assert 0.040 <= time.monotonic() - start < HANG
    pipe = r.pipeline(transaction=False)
    for _ in range(500):
        pipe.incr("n")
    assert pipe.execute() == list(range(1, 501))
    sock = connect(link)
    for i in range(20):                          # many small chunks, each delayed, in order
        sock.sendall(command("RPUSH", "l", i))
    replies = b"".join(b":%d\r\n" % (i + 1) for i in range(20))
    assert recv_exactly(sock, len(replies)) == replies
    assert servers[0].client().lrange("l", 0, -1) == [str(i).encode() for i in range(20)]
    sock.close()
    r.close()


@pytest.mark.redis
def test_blackhole_then_delay_delivers_held_bytes(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    sock = connect(link)
    round_trip(sock, PING, PONG)
    link.blackhole("up")
    sock.sendall(PING)
    wait_for(lambda: link.stats()["held_up"] == len(PING), "the PING to be held")
    link.set(up="delay:10")
    assert recv_exactly(sock, len(PONG)) == PONG
    sock.close()


# -- reset ----------------------------------------------------------------------------------------


@pytest.mark.redis
def test_reset_breaks_open_and_new_connections_until_healed(proxy: Any,
                                                           redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    r = client(link)
    assert r.ping()
    sock = connect(link)
    round_trip(sock, PING, PONG)
    assert link.stats()["open"] == 2

    link.reset()
    assert link.modes()["reset"] is True
    assert link.stats()["open"] == 0
    assert_reset(sock)
    with pytest.raises(redis.ConnectionError):
        r.ping()
    sock.close()

    connections = link.stats()["connections"]
    for _ in range(3):                           # accepted, then reset at once
        try:
            fresh = connect(link)
        except ConnectionResetError:             # so soon that connect() saw the RST
            continue
        assert_reset(fresh)
        fresh.close()
    with pytest.raises(redis.ConnectionError):
        client(link).ping()
    assert link.stats()["connections"] == connections + 4
    assert link.stats()["open"] == 0

    link.heal()
    assert link.modes()["reset"] is False
    assert r.ping()                              # a new connection: works again
    again = connect(link)
    round_trip(again, PING, PONG)
    again.close()
    r.close()


def test_refused_target_closes_the_client(proxy: Any, unused_port: int) -> None:
    link = proxy.link(unused_port)
    sock = connect(link)
    sock.sendall(PING)
    assert_closed(sock)
    sock.close()
    wait_for(lambda: link.stats()["connections"] == 1 and link.stats()["open"] == 0,
             "the refused pair to be dropped")


# -- stats ----------------------------------------------------------------------------------------


@pytest.mark.redis
def test_stats_count_connections_and_bytes(proxy: Any, redis_servers: Any) -> None:
    servers = redis_servers(1)
    link = proxy.link(servers[0].port)
    assert link.stats() == {"connections": 0, "open": 0, "up_bytes": 0, "down_bytes": 0,
                            "held_up": 0, "held_down": 0}
    sock = connect(link)
    round_trip(sock, PING, PONG)
    assert link.stats() == {"connections": 1, "open": 1, "up_bytes": len(PING),
                            "down_bytes": len(PONG), "held_up": 0, "held_down": 0}
    second = connect(link)
    round_trip(second, PING, PONG)
    round_trip(second, PING, PONG)
    stats = link.stats()
    assert (stats["connections"], stats["open"]) == (2, 2)
    assert (stats["up_bytes"], stats["down_bytes"]) == (3 * len(PING), 3 * len(PONG))
    sock.close()
    second.close()
    wait_for(lambda: link.stats()["open"] == 0, "both pairs to be closed")
    assert link.stats()["connections"] == 2


# -- control --------------------------------------------------------------------------------------


def test_bad_arguments_raise_value_error_naming_the_argument(proxy: Any,
                                                             unused_port: int) -> None:
    link = proxy.link(unused_port)
    with pytest.raises(ValueError, match="^up: unknown mode 'sideways'"):
        link.set(up="sideways")
    with pytest.raises(ValueError, match="^down: .*'delay:-1'"):
        link.set(down="delay:-1")
    with pytest.raises(ValueError, match="^down: .*'delay:soon'"):
        link.set(down="delay:soon")
    with pytest.raises(ValueError, match="^up: mode must be a string"):
        link.set(up=5)
    with pytest.raises(ValueError, match="^ms: .*-1"):
        link.delay(-1)
    with pytest.raises(ValueError, match="^ms: .*nan"):
        link.delay(float("nan"))
    with pytest.raises(ValueError, match="^direction: .*'sideways'"):
        link.blackhole("sideways")
    with pytest.raises(ValueError, match="^direction: .*'left'"):
        link.delay(10, "left")
    with pytest.raises(ValueError, match="^target_port"):
        proxy.link(0)
    with pytest.raises(ValueError, match="^target_port"):
        proxy.link(70000)
    # the proxy process validates on its own too, and survives whatever it is sent
    with pytest.raises(ValueError, match="^up: unknown mode 'bogus'"):
        proxy._request({"cmd": "set", "link": link.id, "up": "bogus"})
    with pytest.raises(ValueError, match="^down: .*'delay:inf'"):
        proxy._request({"cmd": "set", "link": link.id, "down": "delay:inf"})
    with pytest.raises(ValueError, match="^cmd: unknown command 'explode'"):
        proxy._request({"cmd": "explode"})
    with pytest.raises(netproxy.ProxyError, match="does not exist"):
        proxy._request({"cmd": "stats", "link": 12345})
    with proxy._lock:                            # not even JSON
        proxy._proc.stdin.write(b"{not json\n[1, 2]\n")
        assert b'"ok": false' in proxy._readline(proxy._proc)
        assert b'"ok": false' in proxy._readline(proxy._proc)
    assert proxy.running
    assert link.modes() == {"up": "pass", "down": "pass", "reset": False}   # nothing applied
    link.delay(0.5, "up")
    assert link.modes()["up"] == "delay:0.5"


def test_close_stops_the_process_and_the_links(unused_port: int) -> None:
    p = Proxy()
    link = p.link(unused_port)
    other = p.link(unused_port)
    port = link.port
    pid = p.pid
    assert pid_alive(pid)
    other.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other.port), timeout=HANG).close()
    with pytest.raises(netproxy.ProxyError):
        other.stats()
    p.close()
    assert not pid_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=HANG).close()
    with pytest.raises(netproxy.ProxyError):
        link.stats()
    p.close()                                    # idempotent
    assert pid not in netproxy._LIVE


def test_process_exits_when_its_stdin_closes() -> None:
    with Proxy() as p:
        p._proc.stdin.close()
        assert p._proc.wait(HANG) == 0


def test_process_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.util, os, signal, sys
        spec = importlib.util.spec_from_file_location("netproxy", {netproxy.__file__!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        proxy = module.Proxy()
        print(proxy.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)     # no atexit, no close(): only the stdin EOF
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=30)
    pid = int(result.stdout.split()[0])
    wait_for(lambda: not pid_alive(pid), f"the orphaned proxy process {pid} to exit")
