"""Job queue latency and the appliance's overhead on a real aegean job, each next to a baseline from the same run.

1. Latency: on an idle queue, the time from POST /job to the job reported RUNNING (its first process started), over
   LATENCY_RUNS jobs (each cancelled once running), next to the cost of starting that same process directly
   (subprocess.Popen of the same argv). Target: p50 < 0.1 s.
2. Overhead: an aegean job (BANE + aegean, 1 core) on a 1024² synthetic sky through the API, from POST /job until
   SUCCESS with every product written, next to the same two commands run by hand with the same options.
   OVERHEAD_RUNS of each, interleaved; medians compared. Target: appliance <= 1.05 x by hand + 1 s. Aegean's own run
   time varies by 10-20 % between identical runs, so the appliance's own share (its total minus the finder processes'
   time recorded in job.json) is printed too.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from appliance.testing import ServerProcess, make_sky
from runners.local import appliance_command

LATENCY_RUNS = 20
OVERHEAD_RUNS = 5
OPTIONS = {"ncores": 1, "bkgbox": 100, "bkggrid": 20, "seedthr": 5.0, "mergethr": 2.6, "fit-maxcomponents": 3}


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="caesar-bench-") as tmp:
        work = Path(tmp)
        tiny, sky = work / "tiny.fits", work / "sky.fits"
        make_sky(tiny, size=64, n_sources=2)
        make_sky(sky, size=1024, n_sources=300, seed=7)
        with (
            ServerProcess(work / "home") as server,
            httpx.Client(base_url=server.api, headers=server.headers, timeout=600) as http,
        ):
            tiny_uuid = upload(http, tiny)
            sky_uuid = upload(http, sky)
            wait(http, submit(http, tiny_uuid, OPTIONS), ("SUCCESS",))  # warm-up: first imports in the server
            latency(http, tiny_uuid, work)
            overhead(http, sky_uuid, sky, work)
            server.stop()


def upload(http: httpx.Client, path: Path) -> str:
    return http.post("/upload", files={"file": (path.name, path.read_bytes())}).raise_for_status().json()["uuid"]


def submit(http: httpx.Client, file_uuid: str, options: dict) -> str:
    reply = http.post("/job", json={"app": "aegean", "job_inputs": options, "data_inputs": file_uuid})
    return reply.raise_for_status().json()["job_id"]


def wait(http: httpx.Client, job_id: str, states: tuple[str, ...], poll: float = 0.02) -> dict:
    while (status := http.get(f"/job/{job_id}/status").json())["state"] not in states:
        if status["state"] in ("SUCCESS", "FAILURE", "TIMED-OUT", "CANCELED") and status["state"] not in states:
            raise RuntimeError(f"job {job_id} ended {status['state']}: {status['status']}")
        time.sleep(poll)
    return status


def latency(http: httpx.Client, file_uuid: str, work: Path) -> None:
    samples = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        job_id = submit(http, file_uuid, OPTIONS)
        wait(http, job_id, ("RUNNING",), poll=0.001)
        samples.append(time.perf_counter() - start)
        http.post(f"/job/{job_id}/cancel")
        wait(http, job_id, ("CANCELED",))  # the queue is idle again for the next one
    argv = [*appliance_command(), "tool", "BANE", "--cores", "1", "--grid", "20", "20", "--box", "100", "100",
            "tiny.fits"]  # fmt: skip
    spawns = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        spawns.append(time.perf_counter() - start)
        child.kill()
        child.wait()
    p50, p90 = _percentile(samples, 50), _percentile(samples, 90)
    base = _percentile(spawns, 50)
    print(
        f"submit -> RUNNING on an idle queue ({LATENCY_RUNS} jobs): p50 {p50 * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms;"
        f" baseline, starting the same process directly: p50 {base * 1000:.1f} ms;"
        f" target p50 < 100 ms: {'met' if p50 < 0.1 else 'MISSED'}",
        flush=True,
    )


def overhead(http: httpx.Client, file_uuid: str, sky: Path, work: Path) -> None:
    bin_dir = Path(sys.executable).parent
    by_hand, appliance, own = [], [], []
    for n in range(OVERHEAD_RUNS):
        folder = work / f"by-hand-{n}"
        folder.mkdir()
        (folder / sky.name).symlink_to(sky)
        start = time.perf_counter()
        subprocess.run(
            [bin_dir / "BANE", "--cores", "1", "--grid", "20", "20", "--box", "100", "100", sky.name],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                bin_dir / "aegean",
                "--autoload",
                "--cores",
                "1",
                "--island",
                "--seedclip",
                "5.0",
                "--floodclip",
                "2.6",
                "--maxsummits",
                "3",
                "--table",
                "aegean.vot,aegean.reg",
                sky.name,
            ],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        by_hand.append(time.perf_counter() - start)

        start = time.perf_counter()
        job_id = submit(http, file_uuid, OPTIONS)
        wait(http, job_id, ("SUCCESS",), poll=0.02)
        appliance.append(time.perf_counter() - start)
        steps = http.get(f"/job/{job_id}/files/job.json").json()["steps"]
        own.append(appliance[-1] - sum(step["seconds"] for step in steps))
    hand, ours = statistics.median(by_hand), statistics.median(appliance)
    allowed = 1.05 * hand + 1.0
    print(f"aegean on a 1024² sky with 300 sources, 1 core ({OVERHEAD_RUNS} runs each, median):")
    print(f"  by hand (BANE + aegean):             {hand:7.2f} s   runs {' '.join(f'{t:.2f}' for t in by_hand)}")
    print(f"  appliance (POST /job to SUCCESS):    {ours:7.2f} s   runs {' '.join(f'{t:.2f}' for t in appliance)}")
    print(
        f"  overhead {ours - hand:+.2f} s ({ours / hand - 1:+.1%}); target <= 5 % + 1 s = {allowed:.2f} s: "
        f"{'met' if ours <= allowed else 'MISSED'}"
    )
    print(
        f"  of which the appliance's own work (queue, input copy, catalogs, regions, picture, tarball), the "
        f"total minus its finder processes: median {statistics.median(own):.2f} s, runs "
        f"{' '.join(f'{t:.2f}' for t in own)}",
        flush=True,
    )


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]
