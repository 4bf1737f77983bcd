"""How far a job has got: the finder's own progress lines (Aegean's island fitting bar and log, PyBDSF's stages and
bar), on the job page live and at GET /job/<id>/progress, and the elapsed time beside the typical time of earlier
jobs of the app on images of about the same size."""

from __future__ import annotations

import html
import re
import sys
from datetime import timedelta

import pytest

from appliance.apps import App, JobInput
from appliance.apps.aegean import Aegean
from appliance.apps.options import OptionSchema
from appliance.apps.pybdsf import PyBDSF
from appliance.catalogs import Catalog, normalized_table
from appliance.jobs import now
from appliance.models import Job
from appliance.progress import FinderProgress, finder_progress
from runners import RunSpec
from tests.conftest import API, LONG_JOB, upload_file, wait_for_job, write_image
from tests.test_pages import server_sent_events

HTML = {"accept": "text/html"}
STEP = "[2026-12-03T12:00:00+00:00] appliance: step {n}/2 {name}: python -m appliance tool {name} input.fits\n"
BANE = (
    "\x1b[32;20mINFO\x1b[0m 2026-12-03 12:31:52.205 BANE - filter_image: using grid_size (16, 16), box_size (96, 96)\n"
    "\x1b[32;20mINFO\x1b[0m 2026-12-03 12:31:52.206 BANE - filter_mc_sharemem: using 2 cores\n"
)
AEGEAN = (
    "['aegean', '--autoload', '--island', '--progress', 'input.fits']\n"
    "\x1b[32;20mINFO\x1b[0m 2026-12-03 12:31:57.374 source_finder - find_sources_in_image: Found 41 islands\n"
    "\x1b[32;20mINFO\x1b[0m 2026-12-03 12:31:57.374 source_finder - find_sources_in_image: Begin fitting\n"
)


def tqdm_bar(done: int, total: int) -> str:
    return (
        f"\rFitting Islands:: {100 * done // total:3d}%|{'█' * (10 * done // total):10s}| {done}/{total} [00:01<00:02]"
    )


def pybdsf_bar(done: int, total: int) -> str:
    return f"\x1b[1G\x1b[0mFitting islands with Gaussians .......... : [{'=' * done}|] {done}/{total}\x1b[0m\x1b[48G"


@pytest.mark.parametrize(
    ("log", "patterns", "expected"),
    [
        (STEP.format(n=1, name="BANE") + BANE, Aegean.progress_lines, FinderProgress("using 2 cores")),
        # a new step shows nothing of the former one until it prints its own progress
        (STEP.format(n=1, name="BANE") + BANE + STEP.format(n=2, name="aegean"), Aegean.progress_lines, None),
        (STEP.format(n=2, name="aegean") + AEGEAN, Aegean.progress_lines,
         FinderProgress("Begin fitting")),
        (STEP.format(n=2, name="aegean") + AEGEAN + "".join(tqdm_bar(n, 41) for n in range(13)),
         Aegean.progress_lines, FinderProgress("Fitting Islands", 12, 41)),
        ("\x1b[1;34m--> Opened 'input.fits'\x1b[0m\nImage size .............. : (512, 512) pixels\n"
         "\x1b[1;34m--> Calculating background rms and mean images\x1b[0m\n", PyBDSF.progress_lines,
         FinderProgress("Calculating background rms and mean images")),
        ("\x1b[1;34m--> Calculating background rms and mean images\x1b[0m\n"
         + "".join(pybdsf_bar(n, 40) for n in range(8)), PyBDSF.progress_lines,
         FinderProgress("Fitting islands with Gaussians", 7, 40)),
        ("sep: 20 components above 3.0 sigma\n", (), None),
    ],
)  # fmt: skip
def test_the_finders_last_progress_line_of_the_running_step(tmp_path, log, patterns, expected):
    path = tmp_path / "job.log"
    path.write_text(log)
    assert finder_progress(path, patterns) == expected


def add_job(client, app: str, file_uuid: str | None, state: str, seconds: float | None) -> str:
    """A job row as the queue would have left it, ``seconds`` long (None: not started)."""
    import uuid

    started = now() - timedelta(hours=1)
    job_id = str(uuid.uuid4())
    with client.appliance.db.session() as session:
        session.add(
            Job(
                id=job_id,
                user="anonymous",
                app=app,
                data_inputs=file_uuid or "0" * 32,
                file_uuid=file_uuid,
                job_inputs={},
                options={},
                tag=None,
                state=state,
                status=state.lower(),
                submit_date=started,
                start_date=started if seconds is not None else None,
                end_date=started + timedelta(seconds=seconds) if seconds is not None and state != "RUNNING" else None,
                exit_code=0,
                cores=1,
                walltime=600.0,
                attempts=1,
                runner="local",
                pid="",
            )  # fmt: skip
        )
    return job_id


def test_the_typical_time_is_the_median_of_earlier_successful_jobs_of_the_app_on_images_of_about_the_size(
    client, tmp_path
):
    files = {
        shape: client.appliance.files.add(
            "anonymous", write_image(tmp_path / f"{shape[0]}x{shape[1]}.fits", shape)
        ).uuid
        for shape in ((64, 64), (80, 64), (200, 200), (40, 40))
    }
    for app, shape, state, seconds in [
        ("sep", (64, 64), "SUCCESS", 10.0), ("sep", (64, 64), "SUCCESS", 20.0), ("sep", (80, 64), "SUCCESS", 60.0),
        ("sep", (200, 200), "SUCCESS", 500.0), ("sep", (64, 64), "FAILURE", 3.0), ("sep", (64, 64), "CANCELED", 4.0),
        ("aegean", (64, 64), "SUCCESS", 1000.0),
    ]:  # fmt: skip
        add_job(client, app, files[shape], state, seconds)
    add_job(client, "sep", None, "SUCCESS", 2.0)  # its file was deleted: its size is unknown

    def progress(app: str, shape: tuple[int, int]) -> dict:
        reply = client.get(f"{API}/job/{add_job(client, app, files[shape], 'PENDING', None)}/progress")
        assert reply.status_code == 200, reply.text
        return reply.json()

    small = progress("sep", (64, 64))  # 80x64 is within a factor 2 of 64x64; 200x200 and 40x40 are not
    assert (small["typical_seconds"], small["typical_jobs"], small["pixels"]) == (20.0, 3, 4096)
    assert small["state"] == "PENDING" and small["stage"] is None and small["elapsed_time"] == 0.0
    large = progress("sep", (200, 200))
    assert (large["typical_seconds"], large["typical_jobs"]) == (500.0, 1)
    assert progress("aegean", (80, 64))["typical_seconds"] == 1000.0
    tiny, other_app = progress("sep", (40, 40)), progress("pybdsf", (64, 64))
    assert (
        (tiny["typical_seconds"], tiny["typical_jobs"])
        == (other_app["typical_seconds"], other_app["typical_jobs"])
        == (None, 0)
    )

    running = add_job(client, "sep", files[(64, 64)], "RUNNING", 0.0)
    page = client.get(f"/jobs/{running}", headers=HTML).text
    typical = re.search(r'<small id="job-typical">(.*?)</small>', page, re.S).group(1)
    assert "typically 20 s: the median of 3 earlier sep jobs here on images of about this size" in typical
    long_page = client.get(f"/jobs/{add_job(client, 'sep', files[(200, 200)], 'RUNNING', 0.0)}", headers=HTML).text
    assert "typically 8 min 20 s: the median of 1 earlier sep job here" in long_page
    unknown = client.get(f"/jobs/{add_job(client, 'pybdsf', files[(40, 40)], 'RUNNING', 0.0)}", headers=HTML).text
    assert "no earlier pybdsf job here on an image of about this size" in unknown
    ended = client.get(f"/jobs/{add_job(client, 'sep', files[(40, 40)], 'SUCCESS', 5.0)}", headers=HTML).text
    assert 'id="job-typical"' not in ended
    assert client.get(f"{API}/job/nope/progress").json()["error"] == "job_not_found"


class Counter(App):
    """Draws a progress bar over itself, as tqdm does, one step at a time."""

    name = "counter"
    title = description = "counts islands slowly"
    schema = OptionSchema([])
    progress_lines = (re.compile(r"(?P<stage>Counting islands): (?P<done>\d+)/(?P<total>\d+)"),)

    def check_input(self, summary, options, target=None) -> None:
        pass

    def steps(self, job: JobInput) -> list[RunSpec]:
        script = (
            "import sys, time\n"
            "print('starting', flush=True)\n"
            "for i in range(1, 11):\n"
            "    sys.stderr.write(f'\\rCounting islands: {i}/10 |' + '#' * i); sys.stderr.flush(); time.sleep(0.3)\n"
            "print(flush=True)\n"
        )
        return [RunSpec(name="counter", command=[sys.executable, "-c", script], workdir=job.workdir)]

    def collect(self, job: JobInput) -> Catalog:
        return Catalog(normalized_table("islands", self.name, {}), normalized_table("components", self.name, {}))


def test_the_job_page_follows_the_finders_progress_live(client, image):
    client.appliance.jobs.apps.apps["counter"] = Counter()
    file_uuid = upload_file(client, image)
    job_id = client.post(f"{API}/job", json={"app": "counter", "data_inputs": file_uuid}).json()["job_id"]
    with client.stream("GET", f"/events/jobs/{job_id}") as stream:
        events = server_sent_events("".join(stream.iter_text()))
    shown = [
        tuple(map(int, match.groups()))
        for event, data in events
        if event == "status" and (match := re.search(r"Counting islands: (\d+) of (\d+) <progress", data))
    ]
    assert len(shown) >= 2, events
    assert shown == sorted(set(shown)) and {total for _, total in shown} == {10}
    last = [data for event, data in events if event == "status"][-1]
    assert events[-1] == ("done", "SUCCESS") and 'class="state success"' in last
    assert "job-progress" not in last and "job-typical" not in last  # an ended job shows neither
    # the page's log shows the bar's last drawing, not every one over the other
    log = html.unescape(re.search(r'<pre id="job-log"[^>]*>(.*?)</pre>', client.get(f"/jobs/{job_id}").text, re.S)[1])
    assert "Counting islands: 10/10 |##########" in log and "1/10" not in log


def _log(client, job_id: str) -> str:
    return client.get(f"{API}/job/{job_id}/log").text


@pytest.mark.e2e
def test_aegean_and_pybdsf_print_the_progress_the_job_shows(client, sky):
    file_uuid = upload_file(client, sky[0])
    aegean = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": file_uuid}).json()["job_id"]
    body = {"app": "pybdsf", "data_inputs": file_uuid, "job_inputs": {"ncores": 2}}
    pybdsf = client.post(f"{API}/job", json=body).json()["job_id"]
    assert wait_for_job(client, aegean)["state"] == wait_for_job(client, pybdsf)["state"] == "SUCCESS"

    log = _log(client, aegean)
    islands = int(re.search(r"Found (\d+) islands", log)[1])
    bars = [m for line in re.split(r"[\r\n]", log) if (m := Aegean.progress_lines[0].search(line))]
    assert bars and (int(bars[-1]["done"]), int(bars[-1]["total"])) == (islands, islands)
    assert "\r" not in client.get(f"/jobs/{aegean}").text.split('id="job-log"')[1].split("</pre>")[0]

    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", _log(client, pybdsf))  # without its colours
    stages = [m["stage"] for line in plain.splitlines() if (m := PyBDSF.progress_lines[1].search(line))]
    assert (
        "Calculating background rms and mean images" in " ".join(stages) and "Grouping Gaussians into sources" in stages
    )
    # PyBDSF draws its island-fitting bar when it fits on several cores
    islands = int(re.search(r"Number of islands found \.+ : (\d+)", plain)[1])
    drawn = re.split(r"[\r\n]|\x1b\[1G", _log(client, pybdsf))
    bars = [m for line in drawn if (m := PyBDSF.progress_lines[0].search(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line)))]
    if client.get(f"{API}/job/{pybdsf}").json()["cores"] >= 2:
        assert (int(bars[-1]["done"]), int(bars[-1]["total"])) == (islands, islands)
    else:
        assert {int(bar["done"]) for bar in bars} <= {0}


@pytest.mark.e2e
def test_a_running_finder_reports_its_own_progress(client, slow_sky):
    """BANE, computing its maps for minutes on a big image, has said what it is doing."""
    import time

    file_uuid = upload_file(client, slow_sky)
    body = {"app": "aegean", "data_inputs": file_uuid, "job_inputs": LONG_JOB}
    job_id = client.post(f"{API}/job", json=body).json()["job_id"]
    deadline = time.monotonic() + 60
    while not (progress := client.get(f"{API}/job/{job_id}/progress").json())["stage"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert progress["state"] == "RUNNING" and progress["elapsed_time"] > 0 and progress["pixels"] == 1024 * 1024
    assert re.search(rf"BANE - \w+: {re.escape(progress['stage'])}\n", _log(client, job_id)), progress
    assert 'id="job-progress">' in client.get(f"/jobs/{job_id}", headers=HTML).text
    client.post(f"{API}/job/{job_id}/cancel")
