"""A coalescing work queue, in the spirit of client-go's workqueue.

A key is queued at most once however often it is added; a key being processed
is never handed to a second worker; a key added while it is processed is
processed again afterwards. Delayed adds (retries, deadlines) keep the
earliest due time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable


class WorkQueue:
    def __init__(self) -> None:
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._waiting_since: dict[Hashable, float] = {}  # ready keys: when each was queued (monotonic)

    def add(self, key: Hashable) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.put_nowait(key)
            self._waiting_since.setdefault(key, time.monotonic())

    def add_after(self, key: Hashable, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        key = await self._ready.get()
        self._dirty.discard(key)
        self._processing.add(key)
        self._waiting_since.pop(key, None)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._ready.put_nowait(key)
            self._waiting_since.setdefault(key, time.monotonic())

    def waiting(self) -> int:
        """Keys queued and not yet handed to a worker."""
        return len(self._waiting_since)

    def oldest_age(self) -> float:
        """Seconds the longest-waiting queued key has waited (0 when none waits)."""
        return time.monotonic() - min(self._waiting_since.values()) if self._waiting_since else 0.0

    def pending(self) -> int:
        return len(self._dirty) + len(self._processing)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
