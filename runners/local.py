"""The local runner: each command is a child process in its own session (process group) on this machine."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil

from runners import Handle, RunSpec

# Two start times within this many seconds are the same process (psutil rounds them).
_SAME_START = 0.05


class LocalRunner:
    name = "local"

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._usage: dict[int, dict[str, float]] = {}

    def submit(self, spec: RunSpec) -> Handle:
        with spec.log.open("ab") as log:
            child = subprocess.Popen(
                spec.argv,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: cancel reaches every process it starts
            )
        self._children[child.pid] = child
        try:
            started = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0
        return Handle(self.name, {"pid": child.pid, "create_time": started, "label": str(child.pid)})

    def poll(self, handle: Handle) -> int | None:
        child = self._children.get(handle.data["pid"])
        if child is None:
            raise LookupError(f"process {handle.data['pid']} was not started by this runner")
        # wait4 rather than Popen.poll: the same reaping, plus the resources the process (and the children it
        # waited for) used
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == 0:
            return None
        child.returncode = os.waitstatus_to_exitcode(status)
        self._usage[child.pid] = {
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        }
        self._signal_group(handle, signal.SIGKILL)  # leftovers a finder left running in its group
        del self._children[child.pid]
        return child.returncode

    def resources(self, handle: Handle) -> dict[str, float]:
        """CPU seconds and peak resident memory of an ended run (its largest process, not the sum of a pool)."""
        return self._usage.pop(handle.data["pid"], {})

    def cancel(self, handle: Handle) -> None:
        self._signal_group(handle, signal.SIGTERM)

    def kill(self, handle: Handle) -> None:
        self._signal_group(handle, signal.SIGKILL)

    def reap_orphan(self, handle: Handle) -> bool:
        """Kill the group of a process left by an earlier appliance run, only if its pid still names that process."""
        pid = handle.data["pid"]
        try:
            same = abs(psutil.Process(pid).create_time() - handle.data["create_time"]) < _SAME_START
        except psutil.NoSuchProcess:
            same = False
        if same:
            self._signal_group(handle, signal.SIGKILL)
            return True
        return self._signal_group_if_members(pid)

    def _signal_group(self, handle: Handle, signum: int) -> None:
        try:
            os.killpg(handle.data["pid"], signum)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _signal_group_if_members(pgid: int) -> bool:
        """The leader is gone, but its children may live on in its group, which keeps its id. Only processes whose
        group is that id are ours: a new process reusing the number would lead a group of its own only if it were
        a session leader, which the check below excludes by requiring that the leader itself is absent."""
        members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == pgid]
        if not members or any(p.pid == pgid for p in members):
            return False
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
