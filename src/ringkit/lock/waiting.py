"""Waiting for a lock: a waiter subscribes to the lock's release channel on one of its servers
(one that is not skipped as slow or failed) and wakes when a release is published, or when its
timeout passes (the lock's jittered retry then tries again). A subscription that breaks
degrades to plain timed waits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

from ringkit.lock.placement import Server

__all__ = ["RedisWaiter", "AsyncRedisWaiter"]


class RedisWaiter:
    """Waits for a release published on the lock's channel; falls back to a plain timed wait
    when no server can be subscribed to."""

    def __init__(self, targets: Sequence[Server], channel: str) -> None:
        self._pubsub: Any = None
        for server in sorted(targets, key=lambda s: s.link.skipped):
            if server.link.skipped:
                break        # not a server that just failed: a subscribe there would hang
            try:
                pubsub = server.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(channel)
                self._pubsub = pubsub
                break
            except Exception:  # noqa: BLE001 - try the next replica
                continue
        self._sleeper = threading.Event()

    def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if self._pubsub is not None:
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    message = self._pubsub.get_message(timeout=left)
                    # None: timed out, or a subscribe confirmation (ignored): wait on.
                    if message is not None and message.get("type") == "message":
                        return
            except Exception:  # noqa: BLE001 - a dead subscription degrades to polling
                self._close_pubsub()
        self._sleeper.wait(max(0.0, deadline - time.monotonic()))

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self._close_pubsub()


class AsyncRedisWaiter:
    def __init__(self, channel: str) -> None:
        self._channel = channel
        self._pubsub: Any = None

    async def subscribe(self, targets: Sequence[Server]) -> None:
        for server in targets:
            if server.link.skipped:
                continue
            try:
                pubsub = server.client.pubsub(ignore_subscribe_messages=True)
                await asyncio.wait_for(pubsub.subscribe(self._channel),
                                       server.link.timeout)
                self._pubsub = pubsub
                return
            except Exception:  # noqa: BLE001 - try the next replica
                continue

    async def wait(self, timeout: float) -> None:
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout
        if self._pubsub is not None:
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    message = await self._pubsub.get_message(timeout=left)
                    if message is not None and message.get("type") == "message":
                        return
            except Exception:  # noqa: BLE001 - degrade to polling
                self._pubsub = None
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except Exception:  # noqa: BLE001
                pass
            self._pubsub = None
