"""The job engine alone, on the fake runner (runs that cost nothing), in this process with its real monitor thread.

1. Throughput: JOBS two-step jobs submitted at once, each step 0.2 s of fake run, until all are SUCCESS; next to the
   baseline of recording the same jobs only (the submissions, with no engine behind them).
2. The monitor's CPU with ACTIVE runs active (each an hour long), over SAMPLE_SECONDS, as a share of one core; next
   to the same monitor with no run active, in the same run. Target: < 2 % of one core at 100 active runs.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import psutil

from appliance.apps import App, JobInput
from appliance.apps.options import OptionSchema
from appliance.catalogs import Catalog, normalized_table
from appliance.config import load_settings
from appliance.core import Appliance
from appliance.storage import FileStore
from appliance.testing import make_sky
from runners import RunSpec
from runners.fake import FakeRunner, Script

JOBS = 100
ACTIVE = 100
SAMPLE_SECONDS = 10.0


class Nothing(App):
    name = "nothing"
    title = description = "two steps the fake runner plays"
    schema = OptionSchema([])
    image = "nothing"

    def check_input(self, summary, options, target=None) -> None:
        pass

    def steps(self, job: JobInput) -> list[RunSpec]:
        return [RunSpec(name=name, command=[name], workdir=job.workdir) for name in ("short", "short2")]

    def collect(self, job: JobInput) -> Catalog:
        return Catalog(normalized_table("islands", self.name, {}), normalized_table("components", self.name, {}))


def appliance(home: Path, scripts: dict[str, Script]) -> Appliance:
    settings = load_settings(cli={"home": str(home), "port": 0, "inbox": False}, env={}, config_file=None)
    runner = FakeRunner(time.time, scripts, cores=None)  # the cluster's queue: no capacity of its own
    made = Appliance(settings.replace(runner="fake"), runners={"fake": runner})
    made.apps.apps["nothing"] = Nothing()
    made.start()
    return made


def upload(store: FileStore, image: Path) -> str:
    return store.add("anonymous", image).uuid


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="caesar-bench-engine-") as tmp:
        work = Path(tmp)
        image = work / "tiny.fits"
        make_sky(image, size=64, n_sources=2)
        throughput(work, image)
        monitor_cpu(work, image)


def throughput(work: Path, image: Path) -> None:
    quick = {"short": Script(seconds=0.2), "short2": Script(seconds=0.2)}
    made = appliance(work / "t", quick)
    try:
        file_uuid = upload(made.files, image)
        made.queue.pause()  # the baseline: recording only
        start = time.perf_counter()
        ids = [made.jobs.submit("anonymous", "nothing", {}, file_uuid).id for _ in range(JOBS)]
        recording = time.perf_counter() - start
        for job_id in ids:
            made.engine.cancel("anonymous", job_id)
        start = time.perf_counter()
        made.queue.resume()
        ids = [made.jobs.submit("anonymous", "nothing", {}, file_uuid).id for _ in range(JOBS)]
        while made.jobs.counts("anonymous").get("SUCCESS", 0) < JOBS:
            time.sleep(0.05)
        total = time.perf_counter() - start
    finally:
        made.stop()
    print(f"{JOBS} two-step jobs (0.2 s fake runs), submitted at once, to SUCCESS: {total:.2f} s, "
          f"{JOBS / total:.1f} jobs/s; baseline, recording the {JOBS} submissions only: {recording:.2f} s "
          f"({total / recording:.1f} x)", flush=True)  # fmt: skip


def monitor_cpu(work: Path, image: Path) -> None:
    long = {"short": Script(seconds=3600)}
    made = appliance(work / "m", long)
    try:
        monitor = next(t for t in threading.enumerate() if t.name == "job-monitor")
        idle = _cpu_share(monitor)
        file_uuid = upload(made.files, image)
        for _ in range(ACTIVE):
            made.jobs.submit("anonymous", "nothing", {}, file_uuid)
        while made.jobs.counts("anonymous").get("RUNNING", 0) < ACTIVE:
            time.sleep(0.05)
        busy = _cpu_share(monitor)
        ticks_per_second = made.settings.queue_poll_seconds and 1 / made.settings.queue_poll_seconds
    finally:
        made.stop()
    print(f"the monitor's CPU with {ACTIVE} active runs ({ticks_per_second:.0f} ticks/s, over {SAMPLE_SECONDS:.0f} s): "
          f"{busy:.2%} of one core; baseline, no run active: {idle:.2%}; target < 2 %: "
          f"{'met' if busy < 0.02 else 'MISSED'}", flush=True)  # fmt: skip


def _cpu_share(thread: threading.Thread) -> float:
    """CPU seconds the thread used per wall second, from the kernel's per-thread counters."""

    def cpu() -> float:
        times = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
        return times[thread.native_id]

    before, start = cpu(), time.perf_counter()
    time.sleep(SAMPLE_SECONDS)
    return (cpu() - before) / (time.perf_counter() - start)
