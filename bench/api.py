"""Requests per second of a job status poll, ``GET /caesar/api/v1.0/job/<id>/status`` with the API token, through a
real appliance process, next to a bare Litestar hello-world app served by the same uvicorn settings, in one run.

The appliance runs as the tests run it (``caesar-appliance serve`` on a temp home), with one finished sep job; the
bare app is this module run as a script: one route answering a small JSON object, no middleware, served by
``web.server.server_config`` (httptools with the appliance's protocol, one process, no access log). The load is
wrk (C, event-driven): CONNECTIONS connections on THREADS threads for SECONDS, after a warm-up, ROUNDS runs of each
server interleaved; medians are compared. Beside each figure: the server's CPU per request (its user + system time
over the requests answered), the CPU wrk itself took (so the load generator is seen not to be the limit) and what
the rest of the machine took meanwhile (a run is repeated, up to RETRIES times, when others took more than
BUSY_CORES: the machine is shared). Target: the appliance >= 40 % of the bare app's requests/s, with p99 < 50 ms.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from appliance.testing import ServerProcess, make_sky

CONNECTIONS = 32
THREADS = 2
SECONDS = 10
WARMUP_SECONDS = 3
ROUNDS = 3
RETRIES = 3
BUSY_CORES = 0.3  # CPU the rest of the machine may take during a run before the run is repeated
TARGET_RATIO = 0.40
TARGET_P99_MS = 50.0
BARE_ROUTE = "/"


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float  # per request
    server_cores: float
    wrk_cores: float
    other_cores: float


def run() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("the api benchmark needs wrk (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="caesar-bench-api-") as tmp:
        work = Path(tmp)
        with ServerProcess(work / "home") as appliance, BareServer() as bare:
            url = status_url(appliance, work)
            targets = {
                "appliance": (appliance.pid, url, [f"Authorization: Bearer {appliance.token}"]),
                "bare Litestar": (bare.pid, bare.url + BARE_ROUTE, []),
            }
            for _pid, target_url, headers in targets.values():  # warm-up: first imports, caches, connections
                wrk(target_url, headers, WARMUP_SECONDS)
            runs: dict[str, list[Run]] = {name: [] for name in targets}
            for _ in range(ROUNDS):
                for name, (pid, target_url, headers) in targets.items():
                    runs[name].append(measured(name, pid, target_url, headers))
            appliance.stop()
    report(runs)


def status_url(appliance: ServerProcess, work: Path) -> str:
    """The status route of a finished job, checked to need the token."""
    image = work / "tiny.fits"
    make_sky(image, size=64, n_sources=2)
    with httpx.Client(base_url=appliance.api, headers=appliance.headers, timeout=60) as http:
        uuid = http.post("/upload", files={"file": (image.name, image.read_bytes())}).raise_for_status().json()["uuid"]
        job_id = http.post("/job", json={"app": "sep", "job_inputs": {}, "data_inputs": uuid}).raise_for_status()
        job_id = job_id.json()["job_id"]
        deadline = time.monotonic() + 60
        while (state := http.get(f"/job/{job_id}/status").raise_for_status().json()["state"]) != "SUCCESS":
            if state not in ("PENDING", "STARTED", "RUNNING") or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's job ended {state}")
            time.sleep(0.1)
    url = f"{appliance.api}/job/{job_id}/status"
    if httpx.get(url).status_code != 401:
        raise RuntimeError("the status route answered without the API token")
    return url


def measured(name: str, pid: int, url: str, headers: list[str]) -> Run:
    """One wrk run, repeated while the rest of the machine took more than BUSY_CORES meanwhile."""
    for _ in range(RETRIES):
        server = psutil.Process(pid)
        server_before, busy_before = sum(server.cpu_times()[:2]), _machine_busy_seconds()
        output, wrk_cpu, elapsed = wrk(url, headers, SECONDS)
        server_cpu = sum(server.cpu_times()[:2]) - server_before
        others = _machine_busy_seconds() - busy_before - server_cpu - wrk_cpu
        requests = int(re.search(r"(\d+) requests in", output).group(1))
        result = Run(
            requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            p50_ms=_latency_ms(output, "50%"),
            p99_ms=_latency_ms(output, "99%"),
            server_cpu_ms=server_cpu / requests * 1000,
            server_cores=server_cpu / elapsed,
            wrk_cores=wrk_cpu / elapsed,
            other_cores=max(0.0, others / elapsed),
        )
        if result.other_cores <= BUSY_CORES:
            break
        print(
            f"  ({name}: the rest of the machine took {result.other_cores:.2f} cores meanwhile; run repeated)",
            flush=True,
        )
    return result


def wrk(url: str, headers: list[str], seconds: int) -> tuple[str, float, float]:
    """wrk's output, the CPU seconds it took, and the wall seconds of the run; fails on any non-2xx answer."""
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out:
        child = subprocess.Popen([*argv, url], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        out.seek(0)
        output = out.read()
    if child.returncode != 0 or "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk on {url} failed or got errors:\n{output}")
    return output, usage.ru_utime + usage.ru_stime, elapsed


def _latency_ms(output: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + getattr(times, "steal", 0.0)


def report(runs: dict[str, list[Run]]) -> None:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[name])

    print(
        f"GET job status, wrk {CONNECTIONS} connections / {THREADS} threads, {SECONDS} s runs, median of {ROUNDS};"
        f" this machine has {os.cpu_count()} cores"
    )
    print(
        f"{'server':15} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} {'server cores':>12}"
        f" {'wrk cores':>9} {'others':>6}  runs (req/s)"
    )
    for name in runs:
        print(
            f"{name:15} {median(name, 'requests_per_second'):7.0f} {median(name, 'p50_ms'):7.2f}"
            f" {median(name, 'p99_ms'):7.2f} {median(name, 'server_cpu_ms'):10.3f} {median(name, 'server_cores'):12.2f}"
            f" {median(name, 'wrk_cores'):9.2f} {median(name, 'other_cores'):6.2f}  "
            + " ".join(f"{r.requests_per_second:.0f}" for r in runs[name])
        )
    ratio = median("appliance", "requests_per_second") / median("bare Litestar", "requests_per_second")
    p99 = median("appliance", "p99_ms")
    met = ratio >= TARGET_RATIO and p99 < TARGET_P99_MS
    print(
        f"appliance / bare Litestar: {ratio:.2f}; target >= {TARGET_RATIO:.2f} with p99 < {TARGET_P99_MS:.0f} ms"
        f" (p99 {p99:.1f} ms): {'met' if met else 'MISSED'}",
        flush=True,
    )


class BareServer:
    """This module as a script in a child process: the bare app on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> BareServer:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.api"], stdout=subprocess.PIPE, text=True)
        self.url = json.loads(self.process.stdout.readline())["url"] if self.process.stdout else ""
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + BARE_ROUTE).raise_for_status()
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("the bare Litestar server did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


def serve_bare() -> None:
    import uvicorn
    from litestar import Litestar, get

    from appliance.launcher import bind
    from web.server import server_config

    @get(BARE_ROUTE, sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    sock = bind("127.0.0.1", 0)
    print(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}"}), flush=True)
    uvicorn.Server(server_config(Litestar([hello], logging_config=None), shutdown_grace_seconds=1)).run(sockets=[sock])


if __name__ == "__main__":
    serve_bare()
