"""ringkit's Redis transport: the RESP packer against redis-py's own encoder, and rounds against
real servers (through the partition proxy where a reply must be held back): no reply is ever read
out of order after a round that ended early, late follow-ups go on the same connection after the
late reply, a NOSCRIPT resends only what failed, close() closes connections owing replies too,
and no healthy server is skipped in a tight loop."""

from __future__ import annotations

import time

import pytest
import redis
from redis.connection import Connection

from ringkit._redisio import Call, Link, gather, pack, pack_python

COMMANDS = [
    [("GET", "k")],
    [("EVALSHA", "a" * 40, 2, "{x}", "{x}:fence", "holder", 1500, 0, 1)],
    [("HMGET", "p{ключ}", "c", "w", "v", "d"), ("SET", b"\x00\xff\r\n", b"", "NX", "PX", 10)],
    [("EVALSHA", "b" * 40, 1, "k", 2**62, "w" * 300, b"v" * 70000, 0, 1)],
]


@pytest.mark.parametrize("commands", COMMANDS)
def test_pack_matches_redis_py(commands: list[tuple[object, ...]]) -> None:
    expected = b"".join(Connection().pack_commands(commands))
    assert pack(commands) == expected
    assert pack_python(commands) == expected


def test_pack_python_refuses_what_it_cannot_send() -> None:
    with pytest.raises(TypeError, match="cannot send"):
        pack_python([("SET", "k", object())])


# -- rounds against real servers -------------------------------------------------------------------


def _wait(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.redis
def test_a_connection_owing_replies_is_never_read_out_of_order(redis_servers, proxy) -> None:  # type: ignore[no-untyped-def]
    """Round 1's reply is held (blackholed) so the round is decided without it; later rounds
    get their own replies, never round 1's, whether the held reply arrives before or after."""
    (server,) = redis_servers(1)
    direct = server.client()
    for i in range(20):
        direct.set(f"k{i}", f"v{i}")
    link_to = proxy.link(server.port)
    link = Link(redis.Redis.from_url(link_to.url), 0.3)
    other = Link(direct, 0.3)
    first = Call(link, [("GET", "k0")])
    decoy = Call(other, [("PING",)])
    link_to.blackhole("down")
    gather([first, decoy], lambda: decoy.ok)      # decided by the other server alone
    assert first.state == "late" and decoy.state == "ok"
    for i in range(1, 10):
        call = Call(link, [("GET", f"k{i}")])
        gather([call])
        assert call.state == "failed" or call.replies == [f"v{i}".encode()]
        if i == 3:
            link_to.heal()
        link.revive()
    for i in range(10, 20):
        call = Call(link, [("GET", f"k{i}")])
        gather([call])
        assert call.replies == [f"v{i}".encode()]
    link.close()


@pytest.mark.redis
def test_late_follow_ups_go_on_the_same_connection_after_the_late_reply(redis_servers,  # type: ignore[no-untyped-def]
                                                                        proxy) -> None:
    (server,) = redis_servers(1)
    link_to = proxy.link(server.port)
    link = Link(redis.Redis.from_url(link_to.url), 0.3)
    direct = server.client()
    seen: list[object] = []

    def late(replies):  # type: ignore[no-untyped-def]
        seen.append(replies[0])
        return [("SET", "after", "late")]

    link_to.blackhole("down")
    call = Call(link, [("SET", "first", "1")], late=late, late_for=10.0)
    decoy = Call(Link(direct, 0.3), [("PING",)])
    gather([call, decoy], lambda: decoy.ok)
    assert call.state == "late"
    assert direct.get("first") == b"1"            # it ran; only its reply is held
    link_to.heal()
    _wait(lambda: direct.get("after") == b"late")
    assert seen == [b"OK"]
    link.close()


@pytest.mark.redis
def test_noscript_resends_only_the_commands_that_failed(redis_servers) -> None:  # type: ignore[no-untyped-def]
    from ringkit._redisio import script_sha

    (server,) = redis_servers(1)
    script = "return redis.call('INCR', KEYS[1])"
    sha = script_sha(script)
    link = Link(server.client(), 1.0)
    call = Call(link, [("INCR", "plain"), ("EVALSHA", sha, 1, "scripted"), ("INCR", "plain")],
                {sha: script})
    gather([call])
    assert call.replies == [1, 1, 2]              # the INCRs ran once each, the script once
    assert server.client().get("plain") == b"2"
    link.close()


@pytest.mark.redis
def test_close_closes_connections_owing_replies_too(redis_servers, proxy) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_servers(1)
    direct = server.client()
    link_to = proxy.link(server.port)
    link = Link(redis.Redis.from_url(link_to.url), 0.3)
    other = Link(direct, 0.3)
    for _ in range(3):
        gather([Call(link, [("PING",)])])
    link_to.blackhole("down")
    decoy = Call(other, [("PING",)])
    gather([Call(link, [("PING",)]), decoy], lambda: decoy.ok)
    assert link_to.stats()["open"] >= 1
    link.close()
    other.close()
    link_to.heal()            # (a blackholed direction also holds the server's close)
    _wait(lambda: link_to.stats()["open"] == 0)


@pytest.mark.redis
def test_a_healthy_server_is_not_skipped_in_a_tight_loop(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """Rounds decided at 2 of 3 leave the third reply owed, a few microseconds behind; the next
    rounds finish those inline or the late reader does, and no healthy server is ever skipped
    (the store would mark it down)."""
    from ringkit.replication import RedisNode, ReplicatedStore

    servers = redis_servers(3)
    events: list[str] = []
    store = ReplicatedStore({f"n{i}": RedisNode(s.url) for i, s in enumerate(servers)},
                            on_event=lambda e: events.append(f"{e.kind}:{e.node} {e.detail}"))
    store.initialize()
    end = time.monotonic() + 3.0
    i = 0
    while time.monotonic() < end:
        i += 1
        store.put(f"k{i % 500}", b"v")
        store.get(f"k{(i * 7) % 500}")
    assert [e for e in events if e.startswith("node_down")] == []
    store.close()


@pytest.mark.redis
def test_an_interrupted_round_hands_its_calls_over_like_late_ones(redis_servers, proxy) -> None:  # type: ignore[no-untyped-def]
    """KeyboardInterrupt while a round waits: the calls still owed replies are not left
    half-read; their late handlers run when the replies come (a grant would be released)."""
    servers = redis_servers(2)
    links = [proxy.link(s.port) for s in servers]
    ringkit_links = [Link(redis.Redis.from_url(link.url), 0.5) for link in links]
    done: list[int] = []

    def late(index: int):  # type: ignore[no-untyped-def]
        def handler(replies):  # type: ignore[no-untyped-def]
            done.append(index)
            return [("SET", f"after{index}", "1")]
        return handler

    for link in links:
        link.blackhole("down")
    calls = [Call(rk, [("SET", f"k{i}", "v")], late=late(i), late_for=10.0)
             for i, rk in enumerate(ringkit_links)]

    def interrupt() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gather(calls, interrupt)
    assert all(call.state == "late" for call in calls)
    for link in links:
        link.heal()
    _wait(lambda: sorted(done) == [0, 1])
    _wait(lambda: all(s.client().get(f"after{i}") == b"1" for i, s in enumerate(servers)))
    for rk in ringkit_links:
        rk.close()


@pytest.mark.redis
def test_no_late_call_is_stranded(redis_servers) -> None:  # type: ignore[no-untyped-def]
    """Thousands of rounds decided at 2 of 3, with their third replies finished inline by later
    rounds or by the late reader: once the traffic stops, every call owed is settled (none
    waits on its link with nobody to finish it)."""
    servers = redis_servers(3)
    links = [Link(s.client(), 0.5) for s in servers]
    end = time.monotonic() + 2.0
    rounds = 0
    while time.monotonic() < end:
        calls = [Call(link, [("PING",)]) for link in links]
        gather(calls, lambda calls=calls: sum(c.ok for c in calls) >= 2)  # type: ignore[misc]
        rounds += 1
    assert rounds > 100
    _wait(lambda: all(link._late == 0 and not link.deferred for link in links))
    for link in links:
        link.close()
