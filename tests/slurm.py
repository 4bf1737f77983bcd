"""A real Slurm cluster on loopback for the tests: Debian 12's Slurm 22.05 with its own munged, MariaDB and slurmdbd (so
``sacct`` works), slurmctld, one slurmd (node ``localhost``, 2 CPUs) and slurmrestd (JWT, as an unprivileged user), all
in one temp folder and on ports chosen free at start, so that two test runs on one machine can each have their own.
Nothing goes in /etc/slurm or /run/munge, and nothing else's munged or database is used.

What this machine needs, each seen on it:
- munged run as root wants its socket folder executable by all and its key in a folder of its own (mode 700).
- MariaDB starts from an empty data folder in about 1.4 s with ``--skip-grant-tables`` (no ``mariadb-install-db``,
  which takes 2 s more); slurmdbd creates its tables itself. It only listens on 127.0.0.1 and its own socket.
- slurmrestd refuses to run as root; it is started by root and drops to the unprivileged user (``-u``/``-g``).
- memory limits are enforced by jobacct_gather/linux polling every second with ``OverMemoryKill`` (no cgroup plugin:
  cgroup v1 with a hybrid v2 mount and no systemd); ``--mem`` only sets a limit when memory is a consumable
  resource (``CR_Core_Memory``), so a job that asks for none gets ``DefMemPerCPU``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PACKAGES = (
    "slurmctld",
    "slurmd",
    "slurm-client",
    "munge",
    "slurmrestd",
    "slurm-wlm-jwt-plugin",
    "mariadb-server",
    "slurmdbd",
)
PROGRAMS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmrestd", "sbatch", "sacct", "sacctmgr")
REST_USER = "caesar-restd"
REST_API = "v0.0.38"
CLUSTER_NAME = "caesar"
CPUS = 2


class SlurmUnavailable(Exception):
    """Why the tests cannot have a Slurm cluster here (not root, packages not installable): they skip with it."""


class SlurmStartError(RuntimeError):
    """A daemon that exited or did not get ready; the message holds every daemon's log tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def missing_packages() -> list[str]:
    return [p for p in PACKAGES if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]


def prepare() -> None:
    """Install the Slurm packages when missing (as root), and make the unprivileged REST user; raises SlurmUnavailable
    saying why it cannot be had."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("the Slurm tests run slurmd, which needs root")
    missing = missing_packages()
    if missing:
        from tests.containers import EngineUnavailable, _apt_install

        try:
            _apt_install(missing)
        except EngineUnavailable as exc:
            raise SlurmUnavailable(str(exc)) from exc
    absent = [program for program in PROGRAMS if shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if absent:
        raise SlurmUnavailable(f"Slurm programs not found: {' '.join(absent)}")
    try:
        pwd.getpwnam(REST_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/sh",
                               REST_USER], capture_output=True, text=True)  # fmt: skip
        if made.returncode not in (0, 9):  # 9: made meanwhile by another test run
            raise SlurmUnavailable(f"could not create the user {REST_USER}: {made.stderr.strip()}") from None


def available_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("no MemAvailable in /proc/meminfo")


class Cluster:
    """One Slurm cluster in its own folder (``dir``); ``start()`` brings it up, ``stop()`` ends every process it
    started (by pid) and removes the folder. ``env`` holds what a Slurm client needs (``SLURM_CONF``); ``logs`` maps
    each daemon to its log file, and ``log_tails()`` shows them for a failing test."""

    def __init__(self, parent: str | Path = "/tmp", rest_user: str = REST_USER, accounting: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="caesar-appliance-slurm-", dir=parent))
        self.dir.chmod(0o755)  # the REST user and its jobs read slurm.conf and reach the munge socket
        self.rest_user = rest_user
        self.accounting = accounting
        self.conf = self.dir / "slurm.conf"
        self.log_dir = self.dir / "log"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.jwt_key = self.dir / "secret" / "jwt_hs256.key"
        self.ports = {name: free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb", "slurmrestd")}
        self.memory_mb = max(512, int(available_memory_mb() * 0.8))
        self.rest_url = f"http://127.0.0.1:{self.ports['slurmrestd']}"
        self.logs: dict[str, Path] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.started_in: float | None = None

    # --- what the tests use ---------------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The variables a Slurm client (sbatch, squeue, scontrol, sacct, scancel) needs for this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, argv: list[str], check: bool = True, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm command against this cluster (text output captured)."""
        done = subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout,
                              **kwargs)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def shared_dir(self, name: str = "shared") -> Path:
        """A folder in the cluster's folder that every user's jobs can write (mode 1777): jobs submitted through REST
        run as the REST user."""
        folder = self.dir / name
        folder.mkdir(exist_ok=True)
        folder.chmod(0o1777)
        return folder

    def token(self, lifespan: int = 3600, username: str | None = None) -> str:
        """A JWT for slurmrestd (``X-SLURM-USER-TOKEN``), for the REST user unless another is named."""
        done = self.run(["scontrol", "token", f"username={username or self.rest_user}", f"lifespan={lifespan}"])
        return done.stdout.strip().partition("SLURM_JWT=")[2]

    def rest_headers(self, lifespan: int = 3600) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": self.rest_user, "X-SLURM-USER-TOKEN": self.token(lifespan)}

    def stop_controller(self, sig: int = signal.SIGTERM) -> None:
        """End slurmctld (SIGTERM: it saves its state; SIGKILL: as if it crashed); slurmd and the jobs go on.

        After SIGKILL it starts again from the state it last saved, a few seconds old: a job killed under it within a
        second or two of starting was still PENDING there, is started a second time, and the node is drained
        ("Duplicate jobid"); 4 s after the start it was saved RUNNING and finished COMPLETED."""
        self._end("slurmctld", sig)

    def start_controller(self, clear: bool = False) -> None:
        """Start slurmctld again, from its saved state (running jobs go on), or with ``clear`` forgetting every job
        and node state (``-c``)."""
        self._start("slurmctld", ["slurmctld", "-D", *(["-c"] if clear else [])], log=self.log_dir / "slurmctld.log")
        self._wait_for(lambda: port_open(self.ports["slurmctld"]), "slurmctld", 20)
        self._wait_for(self._node_ready, "the node to be up again", 30)

    def restart_controller(self, clear: bool = True) -> None:
        self.stop_controller()
        self.start_controller(clear=clear)

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every daemon's log, for a failing test's message."""
        parts = []
        for name, path in self.logs.items():
            daemon = self.processes.get(name.partition(" ")[0])
            if name.endswith(" stderr") and daemon is not None and daemon.poll() is None:
                continue  # running: the same as its log
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            parts.append(f"--- {name}: {path}\n" + "\n".join(text))
        return "\n".join(parts)

    # --- start and stop -------------------------------------------------------------------------------------------

    def start(self) -> Cluster:
        begun = time.monotonic()
        try:
            self._write_files()
            self._start_munged()
            if self.accounting:
                self._start_mariadb()
            self._wait_for(self.munge_socket.exists, "munged", 10)
            if self.accounting:
                self._wait_for(lambda: port_open(self.ports["mariadb"]), "MariaDB", 30)
                self._start("slurmdbd", ["slurmdbd", "-D"], log=self.log_dir / "slurmdbd.log")
                self._wait_for(lambda: port_open(self.ports["slurmdbd"]), "slurmdbd", 30)
                self.run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME])
            self._start("slurmctld", ["slurmctld", "-D", "-i"], log=self.log_dir / "slurmctld.log")
            self._wait_for(lambda: port_open(self.ports["slurmctld"]), "slurmctld", 20)
            self._start("slurmd", ["slurmd", "-D", "-N", "localhost"], log=self.log_dir / "slurmd.log")
            self._wait_for(self._node_ready, "slurmd to register its node", 30)
            self._start_slurmrestd()
            self._wait_for(self._rest_up, "slurmrestd", 20)
        except BaseException:
            self.stop(remove=False)
            raise
        self.started_in = time.monotonic() - begun
        return self

    def stop(self, remove: bool = True) -> None:
        """Cancel every job, then end each daemon this cluster started, newest first, by its pid, and wait for it."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self._cancel_all_jobs()
        for name in reversed(list(self.processes)):
            self._end(name, signal.SIGTERM)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the pieces -----------------------------------------------------------------------------------------------

    def _write_files(self) -> None:
        for name, mode in (("log", 0o755), ("state", 0o700), ("spool", 0o755), ("munge", 0o755), ("secret", 0o700),
                           ("mariadb", 0o700)):  # fmt: skip
            (self.dir / name).mkdir(mode=mode)
            (self.dir / name).chmod(mode)
        _write_secret(self.dir / "secret" / "munge.key", os.urandom(1024))
        _write_secret(self.jwt_key, os.urandom(32))
        self.conf.write_text(self._slurm_conf())
        self.conf.chmod(0o644)  # the REST user reads it, whatever the umask (CI's may be 077)
        if self.accounting:
            _write_secret(self.dir / "slurmdbd.conf", self._slurmdbd_conf().encode())  # beside slurm.conf, mode 600

    def _slurm_conf(self) -> str:
        d, ports = self.dir, self.ports
        accounting = (
            f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\n"
            f"AccountingStoragePort={ports['slurmdbd']}\n"
            f"AccountingStoragePass={self.munge_socket}\n"  # the munge socket for slurmdbd connections
            if self.accounting
            else "AccountingStorageType=accounting_storage/none\n"
        )
        return f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost
SlurmctldPort={ports["slurmctld"]}
SlurmdPort={ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={self.jwt_key}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
{accounting}JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={self.memory_mb // CPUS}
ReturnToService=2
MpiDefault=none
MinJobAge=300
KillWait=2
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def _slurmdbd_conf(self) -> str:
        d = self.dir
        return f"""\
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={self.jwt_key}
DbdHost=localhost
DbdPort={self.ports["slurmdbd"]}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mariadb"]}
StorageUser=root
StorageLoc=slurm_acct_db
LogFile={d}/log/slurmdbd.log
PidFile={d}/slurmdbd.pid
DebugLevel=info
"""

    def _start_munged(self) -> None:
        secret = self.dir / "secret"
        self._start("munged", ["munged", "--foreground", f"--socket={self.munge_socket}",
                               f"--key-file={secret / 'munge.key'}", f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
                               f"--seed-file={secret / 'munged.seed'}"],  # it logs to stderr
                    log=self.log_dir / "munged.log")  # fmt: skip

    def _start_mariadb(self) -> None:
        data = self.dir / "mariadb"
        self._start("mariadb", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}",
                                f"--socket={data / 'mariadb.sock'}", f"--port={self.ports['mariadb']}",
                                "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-name-resolve",
                                f"--pid-file={data / 'mariadb.pid'}", f"--log-error={self.log_dir / 'mariadb.log'}",
                                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=8M",
                                "--innodb-data-file-path=ibdata1:4M:autoextend",
                                "--innodb-temp-data-file-path=ibtmp1:4M:autoextend", "--innodb-doublewrite=0",
                                "--innodb-flush-log-at-trx-commit=0"],
                    log=self.log_dir / "mariadb.log")  # fmt: skip

    def _start_slurmrestd(self) -> None:
        self._start("slurmrestd", ["slurmrestd", "-u", self.rest_user, "-g", self.rest_user, "-a", "rest_auth/jwt",
                                   "-s", f"openapi/{REST_API},openapi/db{REST_API}",
                                   f"127.0.0.1:{self.ports['slurmrestd']}"],
                    log=self.log_dir / "slurmrestd.log", extra_env={"SLURM_JWT": "daemon"})  # fmt: skip

    def _start(self, name: str, argv: list[str], log: Path, extra_env: dict[str, str] | None = None) -> None:
        """Start a daemon in the foreground in a session of its own; its stdout and stderr go to ``log``, or beside
        its own log file when it writes one (the Slurm daemons: run in the foreground they say everything twice, and
        errors before their log is open only on stderr)."""
        self.logs[name] = log
        if name.startswith("slurm") and name != "slurmrestd":
            self.logs[f"{name} stderr"] = log = log.with_suffix(".stderr")
        with open(log, "ab") as out:
            self.processes[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                                    env={**os.environ, **self.env, **(extra_env or {})},
                                                    cwd=self.dir, start_new_session=True)  # fmt: skip

    def _end(self, name: str, sig: int, timeout: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def _wait_for(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [f"{name} exited {p.returncode}" for name, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = ", ".join(dead) if dead else f"not ready in {timeout} s"
                raise SlurmStartError(f"waiting for {what}: {why}\n{self.log_tails()}")
            time.sleep(0.05)

    def _node_ready(self) -> bool:
        done = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=10)
        return done.returncode == 0 and done.stdout.strip() in ("idle", "mixed", "allocated")

    def _rest_up(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.rest_url}/slurm/{REST_API}/ping", timeout=1)
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for a token
        except OSError:
            return False
        return True

    def _cancel_all_jobs(self, timeout: float = 15) -> None:
        listed = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=10)
        jobs = listed.stdout.split()
        if not jobs:
            return
        self.run(["scancel", *jobs], check=False, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # their slurmstepd end once the jobs have
            queue = self.run(["squeue", "-h", "-t", "all", "-o", "%T"], check=False, timeout=10).stdout.split()
            if not any(state in ("PENDING", "RUNNING", "COMPLETING", "SUSPENDED") for state in queue):
                return
            time.sleep(0.1)

    # --- jobs -----------------------------------------------------------------------------------------------------

    def job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol -o show job``'s key=value fields (empty when the controller no longer knows the job)."""
        done = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False)
        fields = {}
        for item in done.stdout.split():
            key, sep, value = item.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_for_job(self, job_id: str | int, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                                                       "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"),
                     timeout: float = 60) -> dict[str, str]:  # fmt: skip
        """Poll ``scontrol show job`` until its JobState is one of ``states``; returns its fields."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if fields.get("JobState") in states:
                return fields
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {fields}\n{self.log_tails()}")
            time.sleep(0.1)

    def sacct(self, job_id: str | int, fields: str = "JobID,JobName,State,ExitCode,Reason") -> list[str]:
        return self.run(["sacct", "-X", "-P", "-n", "-j", str(job_id), "-o", fields]).stdout.splitlines()

    def wait_for_sacct(self, job_id: str | int, state: str, timeout: float = 30) -> list[str]:
        """Poll ``sacct`` until the job's line shows ``state`` and its own name. slurmctld sends a job's start record
        to slurmdbd only every 5 s: until then sacct shows a stand-in made from its steps, named ``allocation`` and
        PENDING while the job runs, though with its right end state once it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.sacct(job_id)
            if lines and lines[0].split("|")[2].startswith(state) and lines[0].split("|")[1] != "allocation":
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"sacct: job {job_id} not {state} after {timeout} s: {lines}\n{self.log_tails()}")
            time.sleep(0.2)

    def squeue_json(self) -> dict:
        return json.loads(self.run(["squeue", "--json"]).stdout)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
