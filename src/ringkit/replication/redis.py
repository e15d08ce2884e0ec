"""RedisNode: a storage node on a Redis server, through redis-py.

Keys (``prefix`` defaults to ``"ringkit:rep:"``): an item is one hash ``<prefix>{<key>}`` with
fields ``c`` (version counter), ``w`` (writer id), ``v`` (value; absent in a tombstone) and ``d``
(deletion time in ms; 0 when live), so one item's keys share the ``{<key>}`` hash tag (Redis
Cluster). The server's epoch marker is ``<prefix>__epoch__``, its version floor (the largest
counter of a tombstone it purged) ``<prefix>__floor__``, the names of the store's nodes it has
seen ready ``<prefix>__members__`` (a set), and hints for another node live in
``<prefix>__hints__:<node>``. Every read and write is one pipelined call on ringkit's own
connection (see ringkit._redisio) that also reads the marker and the floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ringkit._redisio import Call, Late, Link, client_from_url, gather, script_sha
from ringkit.replication.base import NodeState, Record, Version
from ringkit.validation import server_label

__all__ = ["RedisNode"]

# KEYS: items. ARGV, 5 per item: counter, writer, value, deleted_ms, tombstone (0/1). Applies each
# record only when its version is newer than the stored one; returns 1 (applied) or 0 per item.
# One script call carries many items: a script call costs far more than the work in it.
APPLY = """
local out = {}
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local cur = redis.call('HMGET', KEYS[i], 'c', 'w')
  local newer = true
  if cur[1] then
    local c = tonumber(cur[1])
    local n = tonumber(ARGV[b + 1])
    newer = c < n or (c == n and cur[2] < ARGV[b + 2])
  end
  if newer then
    if ARGV[b + 5] == '1' then
      redis.call('DEL', KEYS[i])
      redis.call('HSET', KEYS[i], 'c', ARGV[b + 1], 'w', ARGV[b + 2], 'd', ARGV[b + 4])
    else
      redis.call('HSET', KEYS[i], 'c', ARGV[b + 1], 'w', ARGV[b + 2], 'v', ARGV[b + 3], 'd', '0')
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: the floor key, then items. ARGV, 7 per item: expected counter ('' for absent), expected
# writer, then APPLY's five. Applies each record only where the stored version is exactly the
# expected one; a record expected absent only if its counter is above the floor (the key may
# have been purged here at a higher version).
APPLY_IF = """
local floor = tonumber(redis.call('GET', KEYS[1]) or '0')
local out = {}
for i = 2, #KEYS do
  local b = (i - 2) * 7
  local cur = redis.call('HMGET', KEYS[i], 'c', 'w')
  local ok
  if ARGV[b + 1] == '' then
    ok = (not cur[1]) and tonumber(ARGV[b + 3]) > floor
  else
    ok = cur[1] == ARGV[b + 1] and cur[2] == ARGV[b + 2]
  end
  if ok then
    if ARGV[b + 7] == '1' then
      redis.call('DEL', KEYS[i])
      redis.call('HSET', KEYS[i], 'c', ARGV[b + 3], 'w', ARGV[b + 4], 'd', ARGV[b + 6])
    else
      redis.call('HSET', KEYS[i], 'c', ARGV[b + 3], 'w', ARGV[b + 4], 'v', ARGV[b + 5], 'd', '0')
    end
    out[i - 1] = 1
  else
    out[i - 1] = 0
  end
end
return out
"""

# Items per script call.
CHUNK = 200

# KEYS: the floor key, then items. ARGV, 2 per item: counter, writer. Purges each item only while
# it holds exactly that version, raising the floor to its counter in the same step, so that no
# later version of the key can be numbered at or below it.
REMOVE = """
local floor = tonumber(redis.call('GET', KEYS[1]) or '0')
local top = floor
for i = 2, #KEYS do
  local b = (i - 2) * 2
  local cur = redis.call('HMGET', KEYS[i], 'c', 'w')
  if cur[1] == ARGV[b + 1] and cur[2] == ARGV[b + 2] then
    redis.call('DEL', KEYS[i])
    local c = tonumber(ARGV[b + 1])
    if c > top then top = c end
  end
end
if top > floor then redis.call('SET', KEYS[1], string.format('%.0f', top)) end
return 1
"""

# KEYS: the floor key. ARGV: a floor. Raises the floor, never lowers it.
RAISE_FLOOR = """
local floor = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > floor then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: a hints hash. ARGV, 4 per hint: key, counter, writer, encoded record (see _encode). Keeps
# per key the hint with the newer version, as MemoryNode does: two writers' hints for one key
# may arrive in either order.
ADD_HINTS = """
for i = 1, #ARGV, 4 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if held then
    local c, w = string.match(held, '^(%d+)%z([^%z]*)%z')
    local n = tonumber(ARGV[i + 1])
    c = tonumber(c)
    newer = c < n or (c == n and w < ARGV[i + 2])
  end
  if newer then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3]) end
end
return 1
"""

# KEYS: a hints hash. ARGV, 2 per hint: key, encoded record. Drops a hint only while it is still
# exactly that record: a newer hint that arrived during the handoff stays, to be handed back.
DROP_HINTS = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""

_SOURCES = {"apply": APPLY, "apply_if": APPLY_IF, "remove": REMOVE, "raise_floor": RAISE_FLOOR,
            "add_hints": ADD_HINTS, "drop_hints": DROP_HINTS}
_SHA = {name: script_sha(source) for name, source in _SOURCES.items()}
SCRIPTS = {_SHA[name]: source for name, source in _SOURCES.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _encode(record: Record) -> bytes:
    head = (f"{record.version.counter}\x00{record.version.writer}\x00{record.deleted_ms}\x00"
            f"{1 if record.value is None else 0}\x00")
    return head.encode() + (record.value or b"")


def _decode(key: str, blob: bytes) -> Record:
    counter, writer, deleted, tomb, value = blob.split(b"\x00", 4)
    return Record(key, None if tomb == b"1" else value, Version(int(counter), writer.decode()),
                  int(deleted))


def _state(reply: Any) -> NodeState:
    if isinstance(reply, Exception):
        raise reply
    marker, floor = reply
    return NodeState(None if marker is None else _text(marker), int(floor or 0))


def _record(key: str, row: Any) -> Record | None:
    c, w, v, d = row
    if c is None:
        return None
    # A tombstone is the item without a value field (APPLY writes none); its deletion time may
    # be 0 (a wall clock at the epoch), so it cannot tell a tombstone.
    return Record(key, None if v is None else _bytes(v), Version(int(c), _text(w)), int(d or 0))


class RedisNode:
    """A replica node on one Redis server (a redis-py client or a ``redis://`` URL).

    Reads and writes go over connections of ringkit's own, made with the client's settings;
    ``socket_timeout`` (default 0.5 s) bounds each of them: a node that has not answered by then
    counts as failed, and its late replies are read (and fed to read repair) afterwards.
    :meth:`close` closes every connection the node opened.
    """

    def __init__(self, client_or_url: Any, *, name: str | None = None,
                 prefix: str = "ringkit:rep:", socket_timeout: float = 0.5) -> None:
        if isinstance(socket_timeout, bool) or not isinstance(socket_timeout, (int, float)) \
                or not math.isfinite(socket_timeout) or socket_timeout <= 0:
            raise ValueError(f"socket_timeout must be seconds > 0, got {socket_timeout!r}")
        self.owned = isinstance(client_or_url, str)
        if self.owned:
            client = client_from_url(client_or_url, socket_timeout)
        elif hasattr(client_or_url, "execute_command") and hasattr(client_or_url,
                                                                   "connection_pool"):
            client = client_or_url
        else:
            raise TypeError("client_or_url must be a redis client or a redis:// URL, got "
                            f"{type(client_or_url).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.client = client
        kwargs = getattr(client.connection_pool, "connection_kwargs", {})
        #: The server as messages name it (``host:port/db``), as the lock layer does.
        self.server = server_label(client)
        #: The node's own name (default ``host:port``: kept as it was, since stores may be keyed
        #: by it, and a store's placement hashes the names it is given).
        self.name = name or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self.prefix = prefix
        self.socket_timeout = float(socket_timeout)
        self.link = Link(client, self.socket_timeout, self.server)
        self._marker_key = f"{prefix}__epoch__"
        self._floor_key = f"{prefix}__floor__"
        self._members_key = f"{prefix}__members__"

    def key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def _hints_key(self, target: str) -> str:
        return f"{self.prefix}__hints__:{target}"

    @staticmethod
    def _apply_args(record: Record) -> list[Any]:
        return [record.version.counter, record.version.writer, record.value or b"",
                record.deleted_ms, 1 if record.value is None else 0]

    def _script_commands(self, sha: str, items: Sequence[tuple[Record, list[Any]]],
                         lead: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """EVALSHA calls of up to CHUNK items each: (record, extra leading args) per item;
        `lead` keys come before the items' keys in every call."""
        commands = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            keys = [*lead, *(self.key(record.key) for record, _ in chunk)]
            args: list[Any] = []
            for record, head in chunk:
                args += head
                args += self._apply_args(record)
            commands.append(("EVALSHA", sha, len(keys), *keys, *args))
        return commands

    def _state_command(self) -> tuple[Any, ...]:
        return ("MGET", self._marker_key, self._floor_key)

    def submit(self, op: str, *args: Any) -> _RedisPending:
        """Prepare ``op`` ("read", "write", "write_if"); ``result()`` runs it, or the store
        runs the ``call`` of several nodes' pending calls together."""
        commands: list[tuple[Any, ...]] = [self._state_command()]
        if op == "read":
            items = list(args[0])
            commands += [("HMGET", self.key(k), "c", "w", "v", "d") for k in items]
        elif op == "write":
            items = list(args[0])
            commands += self._script_commands(_SHA["apply"], [(r, []) for r in items])
        elif op == "write_if":
            pairs = args[0]
            items = [record for record, _ in pairs]
            commands += self._script_commands(_SHA["apply_if"], [
                (record, ["", ""] if expected is None else [expected.counter, expected.writer])
                for record, expected in pairs], lead=[self._floor_key])
        else:
            raise ValueError(f"unknown operation {op!r}")
        return _RedisPending(op, items, Call(self.link, commands, SCRIPTS))

    def read(self, keys: Sequence[str]) -> tuple[NodeState, list[Record | None]]:
        return self.submit("read", keys).result()

    def write(self, records: Sequence[Record]) -> tuple[NodeState, list[bool]]:
        return self.submit("write", records).result()

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[NodeState, list[bool]]:
        return self.submit("write_if", pairs).result()

    def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """One call to this node alone, waited for (within the socket timeout)."""
        call = Call(self.link, commands, SCRIPTS)
        call.must = True
        gather([call])
        replies = call.result()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def remove(self, records: Sequence[Record]) -> None:
        commands = []
        for start in range(0, len(records), CHUNK):
            chunk = records[start:start + CHUNK]
            keys = [self._floor_key, *(self.key(r.key) for r in chunk)]
            args: list[Any] = []
            for r in chunk:
                args += [r.version.counter, r.version.writer]
            commands.append(("EVALSHA", _SHA["remove"], len(keys), *keys, *args))
        if commands:
            self._run(commands)

    def raise_floor(self, floor: int) -> None:
        self._run([("EVALSHA", _SHA["raise_floor"], 1, self._floor_key, int(floor))])

    def read_repair(self, keys: Sequence[str], newest: Mapping[str, Record]) -> Late:
        """A late handler for a read of `keys`: when this node's replies come after the read
        was decided, write it the newest version the store found (`newest`, filled in by the
        store once the read is decided) where the node holds an older one."""

        def late(replies: list[Any]) -> list[tuple[Any, ...]] | None:
            stale = []
            for key, row in zip(keys, replies[1:]):
                best = newest.get(key)
                if best is None or isinstance(row, Exception):
                    continue
                held = _record(key, row)
                if held is None or held.version < best.version:
                    stale.append(best)
            if not stale:
                return None
            return self._script_commands(_SHA["apply"], [(r, []) for r in stale])

        return late

    def scan(self, count: int) -> Iterator[list[str]]:
        start = len(self.prefix) + 1
        batch: list[str] = []
        # The prefix is matched literally: its glob characters (app[1]:) are escaped.
        literal = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        for raw in self.client.scan_iter(match=f"{literal}{{*", count=count):
            name = _text(raw)
            if name.endswith("}"):
                batch.append(name[start:-1])
            if len(batch) >= count:
                yield batch
                batch = []
        if batch:
            yield batch

    def set_marker(self, value: str, *, only_if_missing: bool) -> bool:
        if only_if_missing:
            reply = self._run([("SET", self._marker_key, value, "NX")])[0]
        else:
            reply = self._run([("SET", self._marker_key, value)])[0]
        return reply is not None

    def get_marker(self) -> str | None:
        return _state(self._run([self._state_command()])[0]).marker

    def get_floor(self) -> int:
        return _state(self._run([self._state_command()])[0]).floor

    def members(self) -> set[str]:
        """The store's node names this node remembers as ready members (see initialize())."""
        return {_text(m) for m in self._run([("SMEMBERS", self._members_key)])[0]}

    def add_members(self, names: Sequence[str]) -> None:
        if names:
            self._run([("SADD", self._members_key, *names)])

    def add_hints(self, target: str, records: Sequence[Record]) -> None:
        if records:
            args: list[Any] = []
            for r in records:
                args += [r.key, r.version.counter, r.version.writer, _encode(r)]
            self._run([("EVALSHA", _SHA["add_hints"], 1, self._hints_key(target), *args)])

    def hints(self, target: str) -> list[Record]:
        raw = self._run([("HGETALL", self._hints_key(target))])[0]
        if isinstance(raw, dict):
            pairs = list(raw.items())
        else:
            pairs = list(zip(raw[::2], raw[1::2]))
        return [_decode(_text(k), _bytes(v)) for k, v in pairs]

    def drop_hints(self, target: str, records: Sequence[Record]) -> None:
        if records:
            args: list[Any] = []
            for r in records:
                args += [r.key, _encode(r)]
            self._run([("EVALSHA", _SHA["drop_hints"], 1, self._hints_key(target), *args)])

    def reconnect(self) -> None:
        """Forget that the server failed: the next call connects to it at once, instead of
        waiting for the background probe to find it answering."""
        self.link.revive()

    def close(self) -> None:
        """Close every connection this node opened (and its client, if made from a URL)."""
        self.link.close()
        if self.owned:
            self.client.close()

    def __repr__(self) -> str:
        return f"<RedisNode {self.name} on {self.server} prefix={self.prefix!r}>"


class _RedisPending:
    """One RedisNode call: ``call`` is the transport call (run by the store's round together
    with other nodes' calls, or by ``result()`` alone); ``parse()`` turns its replies into the
    node's state and the operation's answer."""

    __slots__ = ("op", "items", "call", "_parsed")

    def __init__(self, op: str, items: Sequence[Any], call: Call) -> None:
        self.op = op
        self.items = items
        self.call = call
        self._parsed: tuple[NodeState, Any] | None = None

    def parse(self) -> tuple[NodeState, Any]:
        if self._parsed is not None:
            return self._parsed
        state_reply, *rows = self.call.result()
        state = _state(state_reply)
        for row in rows:
            if isinstance(row, Exception):
                raise row
        answer: Any
        if self.op in ("write", "write_if"):
            answer = [int(a) == 1 for chunk in rows for a in chunk]
        else:
            answer = [_record(key, row) for key, row in zip(self.items, rows)]
        self._parsed = (state, answer)
        return self._parsed

    def result(self) -> tuple[NodeState, Any]:
        if self.call.state is None:
            gather([self.call])
        return self.parse()
