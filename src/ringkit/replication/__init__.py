"""Primary/replica replication over the ring: every key on its preference list, quorum writes
and reads, read repair, hinted handoff, anti-entropy repair and rebalancing."""

from ringkit.errors import PartialWriteError, QuorumError, WriteOutcome
from ringkit.replication.base import Node, NodeDown, NodeState, Record, Version
from ringkit.replication.codec import LayoutError
from ringkit.replication.memory import MemoryNode
from ringkit.replication.redis import RedisNode
from ringkit.replication.store import (
    DigestStatus,
    RebalancePlan,
    RepairReport,
    ReplicatedStore,
    ReplicationEvent,
    VersionConflictError,
)

__all__ = [
    "DigestStatus",
    "LayoutError",
    "MemoryNode",
    "Node",
    "NodeDown",
    "NodeState",
    "PartialWriteError",
    "QuorumError",
    "Record",
    "RebalancePlan",
    "RedisNode",
    "RepairReport",
    "ReplicatedStore",
    "ReplicationEvent",
    "Version",
    "VersionConflictError",
    "WriteOutcome",
]
