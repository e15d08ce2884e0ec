"""The oracle of repair's digests: a full scan of every bucket a node holds.

A node's ``digests`` (the DIGEST script on Redis: 64-bit XOR assembled from Lua's 32-bit halves)
must equal the XOR of the item hashes of a full scan of its ``versions``, bucket by bucket, with
its item and tombstone counts. The fault suites check it after their workloads.

It imports ringkit only when called: conftest loads it for every session, and the libmemcached
session runs the compat proofs without ringkit installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["full_digests", "check_digests_match_a_full_scan"]


def full_digests(node: Any) -> dict[int, tuple[int, int, int]]:
    """Every bucket's (XOR of item hashes, items, tombstones) from a full scan of the node."""
    from ringkit.replication import codec

    out: dict[int, tuple[int, int, int]] = {}
    _, rows = node.versions(list(range(codec.N_BUCKETS)))
    for bucket, fields, heads in rows:
        x = tombs = 0
        for head in heads:
            x ^= int.from_bytes(head[codec.HEAD:codec.BLOB_HEAD], "big")
            tombs += head[codec.VERSION_HEAD] == 0x74
        out[bucket] = (x, len(fields), tombs)
    return out


def check_digests_match_a_full_scan(nodes: dict[str, Any]) -> int:
    """Assert that every node's digests equal a full scan's; returns the buckets held."""
    from ringkit.replication import codec

    held = 0
    for name, node in nodes.items():
        full = full_digests(node)
        _, digests = node.digests(list(range(codec.N_BUCKETS)))
        for bucket, found in enumerate(digests):
            assert tuple(found) == full.get(bucket, (0, 0, 0)), (name, bucket)
        held += len(full)
    return held
