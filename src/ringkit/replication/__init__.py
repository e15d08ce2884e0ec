"""Primary/replica replication over the ring: every key on its preference list, quorum writes
and reads, read repair, hinted handoff, anti-entropy repair and rebalancing."""

from ringkit.errors import QuorumError
from ringkit.replication.base import Node, NodeDown, Record, Version
from ringkit.replication.memory import MemoryNode
from ringkit.replication.redis import RedisNode
from ringkit.replication.store import (
    RepairReport,
    ReplicatedStore,
    ReplicationEvent,
    VersionConflictError,
)

__all__ = [
    "MemoryNode",
    "Node",
    "NodeDown",
    "QuorumError",
    "Record",
    "RedisNode",
    "RepairReport",
    "ReplicatedStore",
    "ReplicationEvent",
    "Version",
    "VersionConflictError",
]
