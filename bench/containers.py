"""Jobs on the container runner (a rootful podman, set up as the tests set it up, with the finders image), each
figure next to a baseline from the same run.

1. Latency: on an idle queue, POST /job (sep, "runner": "container") until the job is RUNNING (its container
   started), over LATENCY_RUNS jobs; baseline: `podman run --rm` of the same image by hand (start to exit of `true`).
   Target: p50 < 1.5 s.
2. Overhead: an aegean job (BANE + aegean, 1 core) on a 1024² synthetic sky in the finders image through the API,
   from POST /job until SUCCESS with every product written, next to the same two commands run by hand in the same
   image (`podman run --rm` each, the folder mounted). OVERHEAD_RUNS of each, interleaved; medians compared.
   Target: appliance <= 1.05 x by hand + 2 s.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from appliance.testing import ServerProcess, make_sky
from bench.jobs import OPTIONS, _percentile, upload, wait

LATENCY_RUNS = 10
OVERHEAD_RUNS = 3


def run() -> None:
    from tests import containers  # the tests' podman: its storage, settings and images

    try:
        os.environ.update(containers.prepare_podman())
        containers.build_base_image()
        image = containers.finders_image()
    except containers.EngineUnavailable as exc:
        print(f"skipped: no container engine here ({exc})", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="caesar-bench-containers-") as tmp:
        work = Path(tmp)
        tiny, sky = work / "tiny.fits", work / "sky.fits"
        make_sky(tiny, size=64, n_sources=2)
        make_sky(sky, size=1024, n_sources=300, seed=7)
        config = work / "appliance.toml"
        config.write_text('[runners.container]\nengine = "podman"\n')
        with (
            ServerProcess(work / "home", env={"CAESAR_APPLIANCE_CONFIG": str(config)}) as server,
            httpx.Client(base_url=server.api, headers=server.headers, timeout=600) as http,
        ):
            tiny_uuid, sky_uuid = upload(http, tiny), upload(http, sky)
            wait(http, submit(http, tiny_uuid, "sep", {}), ("SUCCESS",))  # warm-up
            latency(http, tiny_uuid, image, containers)
            overhead(http, sky_uuid, sky, image, work, containers)
            server.stop()
        containers.remove_containers()


def submit(http: httpx.Client, file_uuid: str, app: str, options: dict) -> str:
    reply = http.post("/job", json={"app": app, "job_inputs": options, "data_inputs": file_uuid, "runner": "container"})
    return reply.raise_for_status().json()["job_id"]


def latency(http: httpx.Client, file_uuid: str, image: str, containers) -> None:
    samples, by_hand = [], []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        job_id = submit(http, file_uuid, "sep", {})
        wait(http, job_id, ("RUNNING", "SUCCESS"), poll=0.005)
        samples.append(time.perf_counter() - start)
        wait(http, job_id, ("SUCCESS",))
        start = time.perf_counter()
        containers.podman(["run", "--rm", "--network", "none", image, "true"])
        by_hand.append(time.perf_counter() - start)
    p50, p90, base = _percentile(samples, 50), _percentile(samples, 90), _percentile(by_hand, 50)
    print(
        f"submit -> RUNNING on an idle queue, container runner ({LATENCY_RUNS} sep jobs): p50 {p50:.2f} s, "
        f"p90 {p90:.2f} s; baseline, podman run --rm of the same image by hand: p50 {base:.2f} s "
        f"({p50 / base:.2f} x); target p50 < 1.5 s: {'met' if p50 < 1.5 else 'MISSED'}",
        flush=True,
    )


def overhead(http: httpx.Client, file_uuid: str, sky: Path, image: str, work: Path, containers) -> None:
    by_hand, ours = [], []
    for n in range(OVERHEAD_RUNS):
        folder = work / f"by-hand-{n}"
        folder.mkdir()
        (folder / sky.name).write_bytes(sky.read_bytes())
        mount = ["run", "--rm", "--network", "none", "-v", f"{folder}:/job", "-w", "/job", image,
                 "python3", "-m", "appliance", "tool"]  # fmt: skip
        start = time.perf_counter()
        containers.podman([*mount, "BANE", "--cores", "1", "--grid", "20", "20", "--box", "100", "100", sky.name])
        containers.podman([*mount, "aegean", "--autoload", "--cores", "1", "--island", "--seedclip", "5.0",
                           "--floodclip", "2.6", "--maxsummits", "3", "--table", "aegean.vot,aegean.reg",
                           sky.name])  # fmt: skip
        by_hand.append(time.perf_counter() - start)
        start = time.perf_counter()
        wait(http, submit(http, file_uuid, "aegean", OPTIONS), ("SUCCESS",), poll=0.02)
        ours.append(time.perf_counter() - start)
    hand, appliance = statistics.median(by_hand), statistics.median(ours)
    allowed = 1.05 * hand + 2.0
    print(f"aegean on a 1024² sky with 300 sources in the finders image, 1 core ({OVERHEAD_RUNS} runs each, median):")
    print(
        f"  by hand (podman run BANE, podman run aegean): {hand:7.2f} s   runs {' '.join(f'{t:.2f}' for t in by_hand)}"
    )
    print(
        f"  appliance (POST /job to SUCCESS):             {appliance:7.2f} s   runs {' '.join(f'{t:.2f}' for t in ours)}"
    )
    print(f"  overhead {appliance - hand:+.2f} s ({appliance / hand - 1:+.1%}); target <= 5 % + 2 s = {allowed:.2f} s: "
          f"{'met' if appliance <= allowed else 'MISSED'}", flush=True)  # fmt: skip
