"""The Lua scripts of the Redis lock backend, and how they are called (EVALSHA by sha; a server
that lacks a script gets it loaded by the transport and the call sent again).

Keys (``prefix`` defaults to ``"ringkit:lock:"``; ``{name}`` is the Redis Cluster hash tag, so one
lock's keys share a slot): ``<prefix>{<name>}`` the lease (the holder's random id per attempt,
with a PX expiry); ``<prefix>{<name>}:fence`` the fencing counter (never expires);
``<prefix>__epoch__`` per server, ``<since>:<max_ttl_ms>``: when ringkit first saw it empty
(restart detection) and the max_ttl its clients agreed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ringkit._redisio import script_sha

__all__ = ["ACQUIRE", "FENCE", "RELEASE", "EXTEND", "SCRIPTS", "SHA", "evalsha"]

# KEYS: lease, fence, epoch marker. ARGV: holder, ttl_ms, max_ttl_ms, check_epoch (0/1),
# assign_token (0/1), persistent (0/1). Reply: {granted, token (assigned) or fence counter,
# server time in us, restarting (0/1)}; an error when the server's max_ttl is another.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[4] == '1' then
  local epoch = redis.call('GET', KEYS[3])
  if not epoch then
    if ARGV[6] == '1' then
      redis.call('SET', KEYS[3], '0:' .. ARGV[3])
    else
      redis.call('SET', KEYS[3], string.format('%.0f', now) .. ':' .. ARGV[3])
      return {0, fence, now, 1}
    end
  else
    local since, limit = string.match(epoch, '^(%d+):(%d+)$')
    if not since then
      since = epoch
      limit = ARGV[3]
    end
    if limit ~= ARGV[3] then
      return redis.error_reply('RINGKIT max_ttl mismatch: this server was set up with max_ttl=' ..
        limit .. ' ms, the client has ' .. ARGV[3] .. ' ms')
    end
    if now < tonumber(since) + tonumber(limit) * 1000 then
      return {0, fence, now, 1}
    end
  end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, fence, now, 0}
end
if ARGV[5] == '1' then
  local token = math.max(fence + 1, now)
  redis.call('SET', KEYS[2], string.format('%.0f', token))
  return {1, token, now, 0}
end
return {1, fence, now, 0}
"""

# KEYS: lease, fence. ARGV: holder, token. Raises the counter to token, never lowers it, and only
# while holder still holds the lease. Reply: 1, or 0 when the lease is gone.
FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > fence then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: lease. ARGV: holder, channel. Compare and delete, then wake the waiters.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
"""

# KEYS: lease. ARGV: holder, ttl_ms. Sets (not adds) the remaining time.
EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


_SOURCES = {"acquire": ACQUIRE, "fence": FENCE, "release": RELEASE, "extend": EXTEND}
SHA = {name: script_sha(source) for name, source in _SOURCES.items()}
SCRIPTS = {SHA[name]: source for name, source in _SOURCES.items()}


def evalsha(sha: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", sha, len(keys), *keys, *args)
