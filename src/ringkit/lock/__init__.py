"""Distributed locks with fencing tokens.

``Lock(name)`` works at once on the process-wide :class:`MemoryBackend`; pass a
:class:`RedisBackend` to lock across processes and machines, on one Redis server or a quorum of
several. Every lease carries a fencing token that strictly increases per lock name, so a
resource that remembers the largest token it saw can refuse a holder whose lease ran out.
"""

from ringkit.errors import LockError, LockLostError, LockNotOwnedError, LockQuorumError
from ringkit.lock.base import AsyncLockBackend, Grant, LockBackend
from ringkit.lock.lock import AsyncLock, Lock, LockEvent, default_backend
from ringkit.lock.memory import AsyncMemoryBackend, MemoryBackend
from ringkit.lock.redis import AsyncRedisBackend, RedisBackend

__all__ = [
    "AsyncLock",
    "AsyncLockBackend",
    "AsyncMemoryBackend",
    "AsyncRedisBackend",
    "Grant",
    "Lock",
    "LockBackend",
    "LockError",
    "LockEvent",
    "LockLostError",
    "LockNotOwnedError",
    "LockQuorumError",
    "MemoryBackend",
    "RedisBackend",
    "default_backend",
]
