"""The RESP packer that ringkit's Redis rounds use, against redis-py's own encoder."""

from __future__ import annotations

import pytest
from redis.connection import Connection

from ringkit._redisio import pack, pack_python

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
