"""The single-instance lock: an flock on <home>/appliance.lock, whose content names the process holding it; and the
user's list of running appliances (one file per home in the user's state folder), so that a command run without
--home finds the appliance that is running wherever its home is."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from appliance.config import APP_NAME, LOCK_NAME
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
        """Write who holds the lock (pid, url) for a second launch to read; once there is a url, list it among
        the running appliances."""
        if self._fd is None:
            raise RuntimeError("lock not held")
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        if "url" in info:  # serving: listed for the commands that look for it
            entry = _running_entry(self.path.parent)
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.write_text(json.dumps({"home": str(self.path.parent), **info}))

    def holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            _running_entry(self.path.parent).unlink(missing_ok=True)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def running_appliances() -> list[dict[str, Any]]:
    """The appliances of this user that are running: home, pid and url of each. Entries a killed process left are
    removed: the pid in the home's lock must be that of a live process."""
    running = []
    for entry in sorted(_running_folder().glob("*.json")):
        try:
            info = json.loads(entry.read_text())
            holder = HomeLock(Path(info["home"]) / LOCK_NAME).holder()
            alive = holder.get("pid") == info.get("pid") and psutil.pid_exists(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            alive = False
        if alive:
            running.append(info)
        else:
            entry.unlink(missing_ok=True)
    return running


def _running_folder() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME)) / "running"


def _running_entry(home: Path) -> Path:
    return _running_folder() / f"{hashlib.sha256(str(home).encode()).hexdigest()[:16]}.json"
