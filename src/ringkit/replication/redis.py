"""RedisNode: a storage node on a Redis server, through redis-py.

Keys (``prefix`` defaults to ``"ringkit:rep:"``): an item is one hash ``<prefix>{<key>}`` with
fields ``c`` (version counter), ``w`` (writer id), ``v`` (value; absent in a tombstone) and ``d``
(deletion time in ms; 0 when live), so one item's keys share the ``{<key>}`` hash tag (Redis
Cluster). The server's epoch marker is ``<prefix>__epoch__`` and hints for another node live in
``<prefix>__hints__:<node>``. Every call is one pipelined round trip that also reads the marker.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from ringkit._redisio import Batch, client_from_url, script_sha
from ringkit.replication.base import Record, Version

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

# KEYS: items. ARGV, 7 per item: expected counter ('' for absent), expected writer, then APPLY's
# five. Applies each record only where the stored version is exactly the expected one.
APPLY_IF = """
local out = {}
for i = 1, #KEYS do
  local b = (i - 1) * 7
  local cur = redis.call('HMGET', KEYS[i], 'c', 'w')
  local ok
  if ARGV[b + 1] == '' then
    ok = not cur[1]
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
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# Items per script call.
CHUNK = 200

# KEYS: item. ARGV: counter, writer. Deletes the item only while it holds exactly that version.
REMOVE = """
local cur = redis.call('HMGET', KEYS[1], 'c', 'w')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then redis.call('DEL', KEYS[1]) return 1 end
return 0
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encode(record: Record) -> bytes:
    head = (f"{record.version.counter}\x00{record.version.writer}\x00{record.deleted_ms}\x00"
            f"{1 if record.value is None else 0}\x00")
    return head.encode() + (record.value or b"")


def _decode(key: str, blob: bytes) -> Record:
    counter, writer, deleted, tomb, value = blob.split(b"\x00", 4)
    return Record(key, None if tomb == b"1" else value, Version(int(counter), writer.decode()),
                  int(deleted))



class RedisNode:
    """A replica node on one Redis server (a redis-py client or a ``redis://`` URL; clients
    made from URLs get ``socket_timeout`` on connect and on every call)."""

    def __init__(self, client_or_url: Any, *, name: str | None = None,
                 prefix: str = "ringkit:rep:", socket_timeout: float = 0.5) -> None:
        if isinstance(client_or_url, str):
            if isinstance(socket_timeout, bool) or not isinstance(socket_timeout, (int, float)) \
                    or not math.isfinite(socket_timeout) or socket_timeout <= 0:
                raise ValueError(f"socket_timeout must be seconds > 0, got {socket_timeout!r}")
            client = client_from_url(client_or_url, socket_timeout)
        elif hasattr(client_or_url, "register_script"):
            client = client_or_url
        else:
            raise TypeError("client_or_url must be a redis client or a redis:// URL, got "
                            f"{type(client_or_url).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        self.client = client
        kwargs = getattr(client.connection_pool, "connection_kwargs", {})
        self.name = name or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self.prefix = prefix
        self._marker_key = f"{prefix}__epoch__"
        self._remove = client.register_script(REMOVE)
        self._add_hints = client.register_script(ADD_HINTS)
        self._drop_hints = client.register_script(DROP_HINTS)
        self._sha_apply = script_sha(APPLY)
        self._sha_apply_if = script_sha(APPLY_IF)
        self._scripts = {self._sha_apply: APPLY, self._sha_apply_if: APPLY_IF}

    def key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def _hints_key(self, target: str) -> str:
        return f"{self.prefix}__hints__:{target}"

    @staticmethod
    def _apply_args(record: Record) -> list[Any]:
        return [record.version.counter, record.version.writer, record.value or b"",
                record.deleted_ms, 1 if record.value is None else 0]

    def _script_commands(self, sha: str, items: Sequence[tuple[Record, list[Any]]]
                         ) -> list[tuple[Any, ...]]:
        """EVALSHA calls of up to CHUNK items each: (record, extra leading args) per item."""
        commands = []
        for start in range(0, len(items), CHUNK):
            chunk = items[start:start + CHUNK]
            keys = [self.key(record.key) for record, _ in chunk]
            args: list[Any] = []
            for record, head in chunk:
                args += head
                args += self._apply_args(record)
            commands.append(("EVALSHA", sha, len(keys), *keys, *args))
        return commands

    def submit(self, op: str, *args: Any) -> _RedisPending:
        """Send ``op`` ("read", "write", "write_if") now; read its answer in result()."""
        commands: list[tuple[Any, ...]] = [("GET", self._marker_key)]
        if op == "read":
            items = args[0]
            commands += [("HMGET", self.key(k), "c", "w", "v", "d") for k in items]
        elif op == "write":
            items = args[0]
            commands += self._script_commands(self._sha_apply, [(r, []) for r in items])
        elif op == "write_if":
            pairs = args[0]
            items = [record for record, _ in pairs]
            commands += self._script_commands(self._sha_apply_if, [
                (record, ["", ""] if expected is None else [expected.counter, expected.writer])
                for record, expected in pairs])
        else:
            raise ValueError(f"unknown operation {op!r}")
        return _RedisPending(op, items, Batch(self.client, commands, self._scripts).send())

    def read(self, keys: Sequence[str]) -> tuple[str | None, list[Record | None]]:
        return self.submit("read", keys).result()

    def write(self, records: Sequence[Record]) -> tuple[str | None, list[bool]]:
        return self.submit("write", records).result()

    def write_if(self, pairs: Sequence[tuple[Record, Version | None]]
                 ) -> tuple[str | None, list[bool]]:
        return self.submit("write_if", pairs).result()

    def remove(self, records: Sequence[Record]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            self._remove(keys=[self.key(record.key)],
                         args=[record.version.counter, record.version.writer], client=pipe)
        pipe.execute()

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
        return bool(self.client.set(self._marker_key, value, nx=only_if_missing))

    def get_marker(self) -> str | None:
        marker = self.client.get(self._marker_key)
        return None if marker is None else _text(marker)

    def add_hints(self, target: str, records: Sequence[Record]) -> None:
        if records:
            args: list[Any] = []
            for r in records:
                args += [r.key, r.version.counter, r.version.writer, _encode(r)]
            self._add_hints(keys=[self._hints_key(target)], args=args)

    def hints(self, target: str) -> list[Record]:
        raw = self.client.hgetall(self._hints_key(target))
        return [_decode(_text(k), _bytes(v)) for k, v in raw.items()]

    def drop_hints(self, target: str, records: Sequence[Record]) -> None:
        if records:
            args: list[Any] = []
            for r in records:
                args += [r.key, _encode(r)]
            self._drop_hints(keys=[self._hints_key(target)], args=args)

    def __repr__(self) -> str:
        return f"<RedisNode {self.name} prefix={self.prefix!r}>"


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class _RedisPending:
    """The answer of one RedisNode call, parsed when read."""

    def __init__(self, op: str, items: Sequence[Any], batch: Batch) -> None:
        self._op = op
        self._items = items
        self._batch = batch

    def result(self) -> tuple[str | None, Any]:
        marker, *rows = self._batch.replies()
        for row in rows:
            if isinstance(row, Exception):
                raise row
        found = None if marker is None else _text(marker)
        if self._op in ("write", "write_if"):
            return found, [int(a) == 1 for chunk in rows for a in chunk]
        records: list[Record | None] = []
        for key, (c, w, v, d) in zip(self._items, rows):
            if c is None:
                records.append(None)
                continue
            # A tombstone is the item without a value field (APPLY writes none); its deletion
            # time may be 0 (a wall clock at the epoch), so it cannot tell a tombstone.
            records.append(Record(key, None if v is None else _bytes(v),
                                  Version(int(c), _text(w)), int(d or 0)))
        return found, records
