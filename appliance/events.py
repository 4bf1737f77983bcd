"""A feed of changes for live pages: queue worker threads publish that jobs changed, async subscribers wake."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ChangeFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.version = 0  # counts changes; a page compares it to know whether to re-render

    def publish(self) -> None:
        """Called from any thread after a change is committed."""
        with self._lock:
            self.version += 1
            subscribers = list(self._subscribers)
        for loop, event in subscribers:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Event]:
        """An event set at every change while the block runs; clear it after handling a change."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._subscribers.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._subscribers.discard(entry)

    def close(self) -> None:
        """Wake every subscriber, e.g. at shutdown so that open streams end."""
        self.publish()
