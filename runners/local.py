"""The local runner: each step is a child process in its own session (process group) on this machine, its output
in a hidden file of the job folder. Its runs end with the appliance (not durable): after a restart the engine stops
what is left of them and runs them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from runners import Availability, Capabilities, Handle, RunSpec, RunStatus, argv_of, write_files

# Two start times within this many seconds are the same process (psutil rounds them).
_SAME_START = 0.05


def appliance_command() -> list[str]:
    """How this machine starts the appliance's command line: the bundle's binary, or this Python."""
    return [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "appliance"]


class LocalRunner:
    name = "local"
    capabilities = Capabilities(durable=False, containers=False, shared_filesystem=True, gpus=False)

    def __init__(self, cores: int = 0) -> None:
        self.cores = cores or psutil.cpu_count() or 1
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._ended: dict[int, RunStatus] = {}

    def availability(self) -> Availability:
        return Availability(True)

    def capacity(self) -> int:
        return self.cores

    def submit(self, spec: RunSpec) -> Handle:
        write_files(spec)
        log_path = spec.workdir / f".{spec.run_name}.log"
        with log_path.open("ab") as log:
            child = subprocess.Popen(
                argv_of(spec, appliance_command()),
                cwd=spec.workdir,
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
        return Handle(self.name, {"pid": child.pid, "create_time": started, "label": str(child.pid),
                                  "log": str(log_path)})  # fmt: skip

    def status(self, handles: list[Handle]) -> list[RunStatus]:
        return [self._status(handle) for handle in handles]

    def _status(self, handle: Handle) -> RunStatus:
        pid = handle.data["pid"]
        if pid in self._ended:
            return self._ended[pid]
        child = self._children.get(pid)
        if child is None:  # a run of an earlier appliance process: it can be seen, not waited for
            return RunStatus("running") if self._same_process(handle) else RunStatus("lost", reason="not running")
        # wait4 rather than Popen.poll: the same reaping, plus the resources the process (and the children it
        # waited for) used
        found, wait_status, usage = os.wait4(pid, os.WNOHANG)
        if found == 0:
            return RunStatus("running")
        code = os.waitstatus_to_exitcode(wait_status)
        child.returncode = code
        self._signal_group(pid, signal.SIGKILL)  # leftovers a finder left running in its group
        del self._children[pid]
        ended = RunStatus(
            "ended",
            exit_code=code,
            reason="killed" if code < 0 else None,
            usage={
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
            },
        )
        self._ended[pid] = ended
        return ended

    def cancel(self, handle: Handle, force: bool = False) -> None:
        pid = handle.data["pid"]
        if pid in self._ended:
            return  # reaped: its number may already name another process
        if pid in self._children or self._same_process(handle):
            self._signal_group(pid, signal.SIGKILL if force else signal.SIGTERM)
        elif force:
            self._signal_group_if_members(pid)

    def logs(self, handle: Handle, offset: int) -> bytes:
        try:
            with open(handle.data["log"], "rb") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:
            return b""

    def release(self, handle: Handle) -> None:
        self._ended.pop(handle.data["pid"], None)
        Path(handle.data["log"]).unlink(missing_ok=True)

    @staticmethod
    def _same_process(handle: Handle) -> bool:
        try:
            process = psutil.Process(handle.data["pid"])
            same = abs(process.create_time() - handle.data["create_time"]) < _SAME_START
            return same and process.status() != psutil.STATUS_ZOMBIE  # a zombie has ended, waiting to be reaped
        except psutil.NoSuchProcess:
            return False

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
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
