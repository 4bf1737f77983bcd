"""The single-instance lock: an flock on <home>/appliance.lock, whose content names the process holding it."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import AlreadyRunning


class HomeLock:
    """Held for the life of the process; the kernel drops it if the process dies, so it is never stale."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            where = f" at {holder['url']}" if holder.get("url") else ""
            raise AlreadyRunning(
                f"another caesar-appliance (pid {holder.get('pid', '?')}) is already running{where} "
                f"with home {self.path.parent}"
            ) from None
        self._fd = fd
        self.record(pid=os.getpid())

    def record(self, **info: Any) -> None:
        """Write who holds the lock (pid, url) for a second launch to read."""
        if self._fd is None:
            raise RuntimeError("lock not held")
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
