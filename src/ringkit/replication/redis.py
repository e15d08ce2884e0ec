"""RedisNode: a storage node on a Redis server, through redis-py.

Layout 2 (ringkit.replication.codec; ``prefix`` defaults to ``"ringkit:rep:"``): items live in
one Redis hash per bucket, ``<prefix>b:<bucket, 4 hex digits>``, whose fields are the keys
(UTF-8) and whose values are the items' blobs (version, tombstone flag, item hash, value; the
bytes of a blob order its versions). A write is one script call per chunk of items that applies
each blob only over an older one (one HGET and one HSET per item); a read is one HGET per key.
The server's epoch marker is ``<prefix>__epoch__``, its version floor (the largest counter of a
tombstone it purged) ``<prefix>__floor__``, the layout ``<prefix>__layout__`` (``"2"``), the
names of the store's nodes it has seen ready ``<prefix>__members__`` (a set), and hints for
another node live in ``<prefix>__hints__:<node>``. Every read and write is one pipelined call on
ringkit's own connection (see ringkit._redisio) that also reads the marker, floor and layout.
Repair asks a node for per-bucket digests (the XOR of its items' hashes, computed by a script
from what the bucket holds at that moment) and, for buckets that differ, the versions of their
items, without moving values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ringkit._records import pack_apply, pack_hget
from ringkit._redisio import Call, Late, Link, Packed, client_from_url, gather, script_sha
from ringkit.replication import codec
from ringkit.replication.base import NodeState, Record, Version
from ringkit.replication.codec import LayoutError
from ringkit.replication.nodeapi import RecordMethods
from ringkit.validation import server_label

__all__ = ["RedisNode"]

# KEYS: one bucket per item. ARGV, 2 per item: key, blob. Stores each blob over an older one (the
# first 42 bytes, counter and writer in fixed-width hex, order the versions); 1 (applied) or 0
# per item. One call carries many items (a script call costs far more than the work in it), and
# a bounded number of them, so that it never holds the server for long.
APPLY = """
local out = {}
for i = 1, #KEYS do
  local f, b = ARGV[2 * i - 1], ARGV[2 * i]
  local c = redis.call('HGET', KEYS[i], f)
  if (not c) or string.sub(c, 1, 42) < string.sub(b, 1, 42) then
    redis.call('HSET', KEYS[i], f, b)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS: the floor key, then one bucket per item. ARGV, 3 per item: key, blob, expected version
# (its 42 bytes; '' for absent). Stores each blob only where the held version is exactly the
# expected one (the caller numbers the blob above it); a blob expected absent only if its
# counter is above the floor (the key may have been purged here at a higher version).
APPLY_IF = """
local floor = string.format('%014x', tonumber(redis.call('GET', KEYS[1]) or '0'))
local out = {}
for i = 2, #KEYS do
  local j = 3 * i - 5
  local f, b, e = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  if e == '' then
    if string.sub(b, 1, 14) > floor then
      out[i - 1] = redis.call('HSETNX', KEYS[i], f, b)
    else
      out[i - 1] = 0
    end
  else
    local c = redis.call('HGET', KEYS[i], f)
    if c and string.sub(c, 1, 42) == e then
      redis.call('HSET', KEYS[i], f, b)
      out[i - 1] = 1
    else
      out[i - 1] = 0
    end
  end
end
return out
"""

# Items per script call, and bytes of values per call: about half a millisecond of a server's
# time, so that a batch never holds a server past a round's deadline.
CHUNK = 200
CHUNK_BYTES = 256 * 1024
# Buckets per DIGEST and VERSIONS call: about half a millisecond of a server's time at 15 items
# per bucket (1 M keys on a node), a few milliseconds at 10 M.
DIGEST_BUCKETS = 32
VERSION_BUCKETS = 16

# KEYS: the floor key, then one bucket per item. ARGV, 2 per item: key, version (42 bytes).
# Purges each item only while it holds exactly that version, raising the floor to its counter
# before the item goes, so that no later version of the key can be numbered at or below it
# (even if the script stops part-way).
REMOVE = """
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
for i = 2, #KEYS do
  local f, h = ARGV[2 * i - 3], ARGV[2 * i - 2]
  local c = redis.call('HGET', KEYS[i], f)
  if c and string.sub(c, 1, 42) == h then
    local n = tonumber(string.sub(h, 1, 14), 16)
    if n > top then
      top = n
      redis.call('SET', KEYS[1], string.format('%.0f', top))
    end
    redis.call('HDEL', KEYS[i], f)
  end
end
return 1
"""

# KEYS: buckets. Per bucket, 4 numbers: the XOR of its items' hashes (two 32-bit halves: Lua's
# bit library works on 32 bits), its items, its tombstones. Computed from what the bucket holds
# now, in one script (atomic), so nothing has to be kept up to date by writes.
DIGEST = """
local out = {}
local byte, bxor = string.byte, bit.bxor
for i = 1, #KEYS do
  local all = redis.call('HVALS', KEYS[i])
  local hi, lo, t = 0, 0, 0
  for j = 1, #all do
    local f, a1, a2, a3, a4, b1, b2, b3, b4 = byte(all[j], 43, 51)
    hi = bxor(hi, ((a1 * 256 + a2) * 256 + a3) * 256 + a4)
    lo = bxor(lo, ((b1 * 256 + b2) * 256 + b3) * 256 + b4)
    if f == 116 then t = t + 1 end
  end
  local k = 4 * i
  out[k - 3] = hi
  out[k - 2] = lo
  out[k - 1] = #all
  out[k] = t
end
return out
"""

# KEYS: buckets. Per bucket: its item count, then key and blob head (51 bytes: version, flag,
# item hash) of each item; a tombstone's whole blob (its deletion time).
VERSIONS = """
local out = {}
for i = 1, #KEYS do
  local all = redis.call('HGETALL', KEYS[i])
  out[#out + 1] = #all / 2
  for j = 1, #all, 2 do
    local b = all[j + 1]
    out[#out + 1] = all[j]
    if string.byte(b, 43) == 116 then
      out[#out + 1] = b
    else
      out[#out + 1] = string.sub(b, 1, 51)
    end
  end
end
return out
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

# KEYS: the marker, the layout. ARGV: the marker, the layout, 1 to set the marker only where it
# is missing. Sets both at once (a marker never shows without its layout); 1 if set.
SET_MARKER = """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

_SOURCES = {"set_marker": SET_MARKER, "apply": APPLY, "apply_if": APPLY_IF, "remove": REMOVE,
            "raise_floor": RAISE_FLOOR, "add_hints": ADD_HINTS, "drop_hints": DROP_HINTS,
            "digest": DIGEST, "versions": VERSIONS}
_SHA = {name: script_sha(source) for name, source in _SOURCES.items()}
_SHA_B = {name: sha.encode() for name, sha in _SHA.items()}
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
    marker, floor, layout = reply
    if marker is not None and layout != codec.LAYOUT_VERSION.encode():
        raise LayoutError(
            f"this server holds replicated data of layout {_text(layout or b'1')}, not "
            f"{codec.LAYOUT_VERSION} (ringkit 0.1 kept one hash per key): convert it with "
            f"`ringkit store migrate` (RedisNode.migrate) or clear it (see CHANGELOG)")
    return NodeState(None if marker is None else _text(marker), int(floor or 0))


class RedisNode(RecordMethods):
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
        self._layout_key = f"{prefix}__layout__"
        self._prefix_b = prefix.encode()
        self._floor_key_b = self._floor_key.encode()
        self._state_packed = _pack_one(self._state_command())
        self._bucket_keys: dict[int, bytes] = {}

    def bucket_key(self, bucket: int) -> bytes:
        """The Redis key of a bucket's hash."""
        key = self._bucket_keys.get(bucket)
        if key is None:
            key = self._bucket_keys[bucket] = b"%sb:%04x" % (self._prefix_b, bucket)
        return key

    def _hints_key(self, target: str) -> str:
        return f"{self.prefix}__hints__:{target}"

    def _apply_commands(self, fields: list[bytes], buckets: Any, blobs: list[bytes],
                        expected: list[bytes] | None = None, ix: Any = None) -> list[bytes]:
        """EVALSHA calls of APPLY (or APPLY_IF, with `expected`) over the items at positions
        `ix` (None: all), in RESP."""
        if expected is None:
            return pack_apply(_SHA_B["apply"], self._prefix_b, None, fields, buckets, blobs,
                              None, ix, CHUNK, CHUNK_BYTES)
        return pack_apply(_SHA_B["apply_if"], self._prefix_b, self._floor_key_b, fields,
                          buckets, blobs, expected, ix, CHUNK, CHUNK_BYTES)

    def _state_command(self) -> tuple[Any, ...]:
        return ("MGET", self._marker_key, self._floor_key, self._layout_key)

    def submit(self, op: str, *args: Any) -> _RedisPending:
        """Prepare ``op`` (``read_raw``, ``write_raw``, ``write_if_raw``, or the record-level
        ``read``, ``write``, ``write_if``); ``result()`` runs it, or the store runs the
        ``call`` of several nodes' pending calls together."""
        items: Sequence[Any] = ()
        if op in ("read", "write", "write_if"):
            items = args[0]
            if op == "read":
                fields = [k.encode() for k in items]
                args = (fields, codec.buckets_of(fields))
            elif op == "write":
                fields = [r.key.encode() for r in items]
                args = (fields, codec.buckets_of(fields), [codec.encode(r) for r in items])
            else:
                fields = [r.key.encode() for r, _ in items]
                args = (fields, codec.buckets_of(fields), [codec.encode(r) for r, _ in items],
                        [b"" if e is None else codec.header(e.counter, e.writer, False)[:-1]
                         for _, e in items])
        if op in ("read_raw", "read"):
            ix = args[2] if len(args) > 2 else None
            n = len(args[0]) if ix is None else len(ix)
            commands: Any = Packed(self._state_packed + pack_hget(
                self._prefix_b, args[0], args[1], ix), 1 + n)
        elif op in ("write_raw", "write"):
            ix = args[3] if len(args) > 3 else None
            commands = [self._state_packed,
                        *self._apply_commands(args[0], args[1], args[2], ix=ix)]
        elif op in ("write_if_raw", "write_if"):
            ix = args[4] if len(args) > 4 else None
            commands = [self._state_packed, *self._apply_commands(
                args[0], args[1], args[2], expected=args[3], ix=ix)]
        elif op in ("digests", "versions"):
            items = list(args[0])
            size = DIGEST_BUCKETS if op == "digests" else VERSION_BUCKETS
            sha = _SHA["digest" if op == "digests" else "versions"]
            commands = [self._state_packed, *(
                ("EVALSHA", sha, len(part), *(self.bucket_key(b) for b in part))
                for part in _parts(items, size))]
        else:
            raise ValueError(f"unknown operation {op!r}")
        return _RedisPending(op, items, Call(self.link, commands, SCRIPTS))

    def _raw(self, op: str, *args: Any) -> tuple[NodeState, Any]:
        return self.submit(op, *args).result()

    def read_raw(self, fields: list[bytes], buckets: Any, ix: Any = None
                 ) -> tuple[NodeState, list[bytes | None]]:
        """The blob of each key at positions `ix` of `fields` (None: all), None where
        absent; `buckets` are the keys' buckets (codec.buckets_of)."""
        return self._raw("read_raw", fields, buckets, ix)

    def write_raw(self, fields: list[bytes], buckets: Any, blobs: list[bytes], ix: Any = None
                  ) -> tuple[NodeState, list[bool]]:
        """Store each blob (at positions `ix`) over an older one; whether each was applied."""
        return self._raw("write_raw", fields, buckets, blobs, ix)

    def write_if_raw(self, fields: list[bytes], buckets: Any, blobs: list[bytes],
                     expected: list[bytes], ix: Any = None) -> tuple[NodeState, list[bool]]:
        """Store each blob (at positions `ix`) only over exactly its expected version (b"":
        absent, and then only above the floor); whether each was applied."""
        return self._raw("write_if_raw", fields, buckets, blobs, expected, ix)

    def _run(self, commands: Any) -> list[Any]:
        """One call to this node alone, waited for (within the socket timeout)."""
        call = Call(self.link, commands, SCRIPTS)
        call.must = True
        gather([call])
        replies = call.result()
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def purge_raw(self, fields: Sequence[bytes], buckets: Any, heads: Sequence[bytes]) -> None:
        keys = [self.bucket_key(b) for b in _as_list(buckets)]
        commands = []
        for start in range(0, len(fields), CHUNK):
            stop = start + CHUNK
            args: list[Any] = [None] * (2 * len(fields[start:stop]))
            args[0::2] = fields[start:stop]
            args[1::2] = [h[:codec.VERSION_HEAD] for h in heads[start:stop]]
            commands.append(("EVALSHA", _SHA["remove"], len(args) // 2 + 1, self._floor_key,
                             *keys[start:stop], *args))
        if commands:
            self._run(commands)

    def raise_floor(self, floor: int) -> None:
        self._run([("EVALSHA", _SHA["raise_floor"], 1, self._floor_key, int(floor))])

    def digests(self, buckets: Sequence[int]) -> tuple[NodeState, list[tuple[int, int, int]]]:
        """Per bucket: (XOR of its items' hashes, items, tombstones), computed on the server
        (DIGEST_BUCKETS buckets per script call)."""
        return self._raw("digests", buckets)

    def versions(self, buckets: Sequence[int]
                 ) -> tuple[NodeState, list[tuple[int, list[bytes], list[bytes]]]]:
        """The items of each bucket that holds any: (bucket, keys, their blob heads of
        codec.BLOB_HEAD bytes; a tombstone's whole blob)."""
        return self._raw("versions", buckets)

    def read_repair(self, fields: list[bytes], buckets: Any, ix: Any,
                    newest: Mapping[bytes, bytes]) -> Late:
        """A late handler for a read of the keys at positions `ix` of `fields`: when this
        node's replies come after the read was decided, write it the newest blobs the store
        found (`newest`, filled in by the store once the read is decided) where the node holds
        an older one."""

        def late(replies: list[Any]) -> Any:
            stale: list[int] = []
            positions = range(len(fields)) if ix is None else ix.tolist()
            for i, row in zip(positions, replies[1:]):
                best = newest.get(fields[i])
                if best is None or isinstance(row, Exception):
                    continue
                if row is None or row < best:
                    stale.append(i)
            if not stale:
                return None
            blobs = [newest.get(f, b"") for f in fields]
            return self._apply_commands(fields, buckets, blobs,
                                        ix=np.asarray(stale, dtype=np.intp))

        return late

    def scan(self, count: int) -> Iterator[list[str]]:
        """Every key this node holds, in batches of about `count` (the buckets' fields, read
        one SCAN page of buckets at a time, pipelined)."""
        literal = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        batch: list[str] = []
        cursor = 0
        while True:
            cursor, page = self.client.scan(cursor, match=f"{literal}b:*", count=max(count, 100))
            if page:
                for fields in self._run([("HKEYS", name) for name in page]):
                    batch.extend(_text(f) for f in fields)
                while len(batch) >= count:
                    yield batch[:count]
                    batch = batch[count:]
            if not cursor:
                break
        if batch:
            yield batch

    def migrate(self, *, batch: int = 1000) -> int:
        """Convert this server's items of layout 1 (ringkit 0.1: one hash ``<prefix>{<key>}``
        per key) to layout 2, in place, and mark the server as layout 2; returns how many
        items were converted. Stop the store's writers first (a write of 0.1 during the
        migration would be lost). Versions keep their counters; a writer shorter than 28
        characters is left-padded with "z" (every replica pads it alike, so ties still break
        the same way everywhere, and no two writers pad alike). Safe to run again after an
        interruption."""
        literal = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        start = len(self._prefix_b) + 1
        converted = 0
        cursor = 0
        while True:
            cursor, page = self.client.scan(cursor, match=f"{literal}{{*", count=batch)
            names = [n if isinstance(n, bytes) else str(n).encode() for n in page]
            names = [n for n in names if n.endswith(b"}")]
            if names:
                rows = self._run([("HMGET", n, "c", "w", "v", "d") for n in names])
                fields: list[bytes] = []
                blobs: list[bytes] = []
                old: list[bytes] = []
                for name, (c, w, v, d) in zip(names, rows):
                    if c is None or w is None:
                        continue
                    writer = _text(w)
                    if len(writer) > codec.WRITER_DIGITS:
                        raise LayoutError(f"{_text(name)}: writer {writer!r} is longer than "
                                          f"{codec.WRITER_DIGITS} digits")
                    fields.append(name[start:-1])
                    blobs.append(codec.encode_many(
                        [name[start:-1]], [None if v is None else _bytes(v)], [int(c)],
                        [writer.rjust(codec.WRITER_DIGITS, codec.PAD)], int(d or 0))[0])
                    old.append(name)
                if fields:
                    # (the scripts alone: the state check would refuse this node's layout)
                    self._run(self._apply_commands(fields, codec.buckets_of(fields), blobs))
                    self._run([("DEL", *old)])
                    converted += len(fields)
            if not cursor:
                break
        self._run([("SET", self._layout_key, codec.LAYOUT_VERSION)])
        return converted

    def set_marker(self, value: str, *, only_if_missing: bool) -> bool:
        """Set the epoch marker (with `only_if_missing`, only where there is none), and with
        it the layout, in one step: no reader ever sees a marker without its layout."""
        reply = self._run([("EVALSHA", _SHA["set_marker"], 2, self._marker_key, self._layout_key,
                            value, codec.LAYOUT_VERSION, 1 if only_if_missing else 0)])[0]
        return bool(reply)

    def get_marker(self) -> str | None:
        try:
            return _state(self._run([self._state_command()])[0]).marker
        except LayoutError as exc:
            raise LayoutError(f"{self.server} (prefix {self.prefix!r}): {exc}") from None

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


def _as_list(buckets: Any) -> list[int]:
    return buckets.tolist() if hasattr(buckets, "tolist") else list(buckets)


def _parts(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _pack_one(command: tuple[Any, ...]) -> bytes:
    from ringkit._redisio import pack

    return pack([command])


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
        replies = self.call.result()
        state = _state(replies[0])
        answer: Any
        if self.op == "digests":
            answer = []
            for reply in replies[1:]:
                if isinstance(reply, Exception):
                    raise reply
                for k in range(0, len(reply), 4):
                    answer.append((((reply[k] & 0xFFFFFFFF) << 32) | (reply[k + 1] & 0xFFFFFFFF),
                                   reply[k + 2], reply[k + 3]))
        elif self.op == "versions":
            answer = []
            for part, reply in zip(_parts(list(self.items), VERSION_BUCKETS), replies[1:]):
                if isinstance(reply, Exception):
                    raise reply
                pos = 0
                for b in part:
                    n = reply[pos]
                    pos += 1
                    end = pos + 2 * n
                    if n:
                        answer.append((b, reply[pos:end:2], reply[pos + 1:end:2]))
                    pos = end
        elif self.op in ("read_raw", "read"):
            rows = replies[1:]
            for row in rows:
                if row is not None and row.__class__ is not bytes:
                    if isinstance(row, Exception):
                        raise row
                    raise LayoutError(f"a bucket holds a {type(row).__name__}, not an item")
            if self.op == "read":
                answer = [None if row is None else codec.decode(key, row)
                          for key, row in zip(self.items, rows)]
            else:
                answer = rows
        else:
            answer = []
            for chunk in replies[1:]:
                if isinstance(chunk, Exception):
                    raise chunk
                answer += [a == 1 for a in chunk]
        self._parsed = (state, answer)
        return self._parsed

    def result(self) -> tuple[NodeState, Any]:
        if self.call.state is None:
            gather([self.call])
        return self.parse()
