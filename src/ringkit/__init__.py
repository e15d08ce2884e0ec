"""ringkit: place work and data across many machines.

Batch key hashing, a consistent-hash ring with vectorised lookups, weighted load balancing,
fenced distributed locks and primary/replica replication, with Cython kernels on the hot paths.
"""

import logging

from ringkit._hashing import ALGORITHMS, hash64, hash64_many
from ringkit.balancer import Balancer, BalancerEvent, NodeHealth
from ringkit.errors import (
    EmptyRingError,
    LockError,
    LockLostError,
    LockNotOwnedError,
    LockQuorumError,
    NoAvailableNodeError,
    PartialWriteError,
    QuorumError,
    RingkitError,
    UnknownNodeError,
    WriteOutcome,
)
from ringkit.jumphash import JumpHash
from ringkit.lock import AsyncLock, Lock
from ringkit.rendezvous import Rendezvous
from ringkit.replication import ReplicatedStore
from ringkit.ring import HashRing, LoadStats, Movement, RingSnapshot

__version__ = "0.1.0"

# A library logs; the application decides where it goes (nothing is printed unless it does).
logging.getLogger("ringkit").addHandler(logging.NullHandler())

__all__ = [
    "ALGORITHMS",
    "AsyncLock",
    "Lock",
    "Balancer",
    "BalancerEvent",
    "NodeHealth",
    "EmptyRingError",
    "HashRing",
    "JumpHash",
    "LoadStats",
    "Movement",
    "Rendezvous",
    "ReplicatedStore",
    "RingSnapshot",
    "LockError",
    "LockLostError",
    "LockNotOwnedError",
    "LockQuorumError",
    "NoAvailableNodeError",
    "PartialWriteError",
    "QuorumError",
    "RingkitError",
    "UnknownNodeError",
    "WriteOutcome",
    "__version__",
    "hash64",
    "hash64_many",
]
