"""The job engine stepped in the test's thread on a fake runner and a fake clock: a job's steps one after the
other, one status call per tick whatever the number of runs, cancel and the wall-time limit with the grace period,
failures and their reasons, capacity first come first served, restarts with durable and non-durable runners, and
parents waiting for their children."""

from __future__ import annotations

import tarfile
import time

import pytest

from appliance.apps import App, Child, JobInput
from appliance.apps.options import OptionSchema, Value
from appliance.catalogs import Catalog, normalized_table
from runners import OUT_OF_MEMORY, RunSpec
from runners.fake import FakeBackend, FakeClock, FakeRunner, Script
from tests.conftest import API, api_client, make_settings, upload_file

GRACE = 10


class Probe(App):
    """Two steps, "first" and "second", whose runs the fake runner's scripts play; ncores is what it holds."""

    name = "probe"
    title = description = "two scripted steps"
    schema = OptionSchema([Value("ncores", "cores", value_type=int, default=1, min=1, max=8)])
    image = "probe:latest"

    def check_input(self, summary, options, target=None) -> None:
        pass

    def steps(self, job: JobInput) -> list[RunSpec]:
        return [
            RunSpec(name="first", command=["first"], workdir=job.workdir, files={"probe.cfg": "a = 1\n"}),
            RunSpec(name="second", command=["second", "probe.cfg"], workdir=job.workdir),
        ]

    def collect(self, job: JobInput) -> Catalog:
        return Catalog(normalized_table("islands", self.name, {}), normalized_table("components", self.name, {}))


class Mosaic(Probe):
    """Runs as one probe child job per file it is given; its own collect merges nothing."""

    name = "mosaic"
    files: list[str] = []

    def children(self, job: JobInput) -> list[Child]:
        return [Child("probe", {}, uuid) for uuid in self.files]


class Bench:
    """An API client on an appliance whose only runner is a fake one, with no monitor: ``tick`` moves it."""

    def __init__(self, tmp_path, scripts=None, cores=4, durable=True, backend=None, clock=None) -> None:
        self.clock = clock or FakeClock(time.time())
        self.backend = backend or FakeBackend()
        self.runner = FakeRunner(self.clock, scripts or {}, self.backend, cores=cores, durable=durable)
        settings = make_settings(tmp_path / "home", runner="fake", job_cancel_grace_seconds=GRACE)
        self.client = api_client(settings, runners={"fake": self.runner}, clock=self.clock, monitor=False)
        self.appliance = self.client.appliance
        self.appliance.apps.apps["probe"] = Probe()
        self.appliance.apps.apps["mosaic"] = Mosaic()

    def __enter__(self) -> Bench:
        self.client.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.client.__exit__(*exc)

    def submit(self, file_uuid, app="probe", **extra) -> str:
        reply = self.client.post(f"{API}/job", json={"app": app, "data_inputs": file_uuid, **extra})
        assert reply.status_code == 202, reply.text
        return reply.json()["job_id"]

    def status(self, job_id) -> dict:
        return self.client.get(f"{API}/job/{job_id}/status").json()

    def tick(self, advance: float = 0.0) -> None:
        self.clock.advance(advance)
        self.appliance.engine.tick()


def test_a_job_runs_its_steps_one_after_the_other_and_ends_success(tmp_path, image):
    scripts = {"first": Script(seconds=5, output="first says hello\n"), "second": Script(seconds=3)}
    with Bench(tmp_path, scripts) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        assert bench.status(job_id)["state"] == "PENDING" and bench.status(job_id)["runner"] == "fake"
        bench.tick()
        status = bench.status(job_id)
        assert status["state"] == "RUNNING" and status["status"] == "running first (step 1 of 2)"
        assert status["pid"].startswith("fake-")
        folder = bench.appliance.jobs.folder(bench.appliance.jobs.get("anonymous", job_id))
        assert (folder / "probe.cfg").read_text() == "a = 1\n"  # the step's declared file, written by the runner
        bench.tick(4)
        assert bench.status(job_id)["status"] == "running first (step 1 of 2)"
        bench.tick(2)
        assert bench.status(job_id)["status"] == "running second (step 2 of 2)"
        bench.tick(3)
        status = bench.status(job_id)
        assert status["state"] == "SUCCESS" and status["exit_code"] == 0
        steps = bench.appliance.engine.steps_of(job_id)
        assert [(s.name, s.state, s.exit_code, s.runner) for s in steps] == [
            ("first", "ended", 0, "fake"), ("second", "ended", 0, "fake")
        ]  # fmt: skip
        assert "first says hello" in bench.client.get(f"{API}/job/{job_id}/log").text
        job = bench.client.get(f"{API}/job/{job_id}").json()
        assert job["runner"] == "fake" and job["state"] == "SUCCESS"
        assert bench.backend.runs == {}  # each run released once its status and output were taken


def test_one_status_call_per_tick_for_all_active_runs(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=100)}, cores=8) as bench:
        file_uuid = upload_file(bench.client, image)
        ids = [bench.submit(file_uuid) for _ in range(6)]
        bench.tick()
        assert {bench.status(job_id)["state"] for job_id in ids} == {"RUNNING"}
        before = bench.backend.status_calls
        for _ in range(5):
            bench.tick(1)
        assert bench.backend.status_calls - before == 5


def test_cancel_answers_at_once_then_term_then_kill_after_the_grace_period(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=1000, term_ignored=True)}) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        bench.tick()
        begun = time.monotonic()
        reply = bench.client.post(f"{API}/job/{job_id}/cancel")
        assert time.monotonic() - begun < 1
        assert reply.status_code == 200 and reply.json()["state"] == "CANCELING"
        assert bench.status(job_id)["state"] == "CANCELING"
        bench.tick()  # SIGTERM, ignored
        bench.tick(GRACE - 1)
        assert bench.status(job_id)["state"] == "CANCELING"
        bench.tick(2)  # past the grace period: SIGKILL
        bench.tick()
        status = bench.status(job_id)
        assert (
            status["state"] == "CANCELED" and status["status"] == "Job canceled by user" and status["exit_code"] == -9
        )
        step = bench.appliance.engine.steps_of(job_id)[0]
        assert step.term_sent_at is not None and step.kill_sent_at is not None and step.reason == "killed"
        tarball = bench.client.get(f"{API}/job/{job_id}/output")
        assert tarball.status_code == 200
        assert "already completed" in bench.client.post(f"{API}/job/{job_id}/cancel").json()["status"]


def test_a_pending_job_is_canceled_at_once(tmp_path, image):
    with Bench(tmp_path, cores=1) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        reply = bench.client.post(f"{API}/job/{job_id}/cancel")
        assert reply.json()["state"] == "CANCELED"
        bench.tick()
        assert bench.backend.submitted == []


def test_the_wall_time_limit_stops_the_run_and_ends_timed_out(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=1000)}) as bench:
        job_id = bench.submit(upload_file(bench.client, image), walltime=30)
        bench.tick()
        bench.tick(29)
        assert bench.status(job_id)["state"] == "RUNNING"
        bench.tick(2)  # past the deadline: SIGTERM, which it honours
        bench.tick()
        status = bench.status(job_id)
        assert status["state"] == "TIMED-OUT" and status["exit_code"] == 124 and "wall-time" in status["status"]


@pytest.mark.parametrize(
    ("script", "words", "code"),
    [
        (Script(seconds=2, exit_code=3), "first failed with exit code 3", 3),
        (Script(seconds=2, exit_code=137, reason=OUT_OF_MEMORY), "first ran out of memory", 137),
        (Script(seconds=100, lost_after=2), "first was lost by the fake runner", None),
    ],
)
def test_a_failed_step_ends_the_job_failure_with_its_reason(tmp_path, image, script, words, code):
    with Bench(tmp_path, {"first": script}) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        bench.tick()
        bench.tick(3)
        status = bench.status(job_id)
        assert status["state"] == "FAILURE" and words in status["status"] and status["exit_code"] == code
        assert [s.name for s in bench.appliance.engine.steps_of(job_id) if s.state != "waiting"] == ["first"]


def test_capacity_is_first_come_first_served(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=10), "second": Script(seconds=0)}, cores=2) as bench:
        file_uuid = upload_file(bench.client, image)
        big = bench.submit(file_uuid, job_inputs={"ncores": 2})
        second_big = bench.submit(file_uuid, job_inputs={"ncores": 2})
        small = bench.submit(file_uuid, job_inputs={"ncores": 1})
        bench.tick()
        states = [bench.status(job_id)["state"] for job_id in (big, second_big, small)]
        assert states == ["RUNNING", "PENDING", "PENDING"]  # the small one does not overtake
        runners = {r["name"]: r for r in bench.client.get(f"{API}/runners").json()}
        assert runners["fake"]["cores_busy"] == 2 and runners["fake"]["jobs_pending"] == 2
        bench.tick(11)  # big's first step ends, its second starts
        bench.tick()  # big ends; second_big gets the cores, small still waits for them
        assert bench.status(big)["state"] == "SUCCESS"
        assert [bench.status(job_id)["state"] for job_id in (second_big, small)] == ["RUNNING", "PENDING"]


def test_a_job_asks_more_cores_than_its_runner_has_and_runs_on_all_of_them(tmp_path, image):
    with Bench(tmp_path, cores=2) as bench:
        job_id = bench.submit(upload_file(bench.client, image), job_inputs={"ncores": 8})
        assert bench.client.get(f"{API}/job/{job_id}").json()["cores"] == 2


def test_runner_refusals(tmp_path, image):
    with Bench(tmp_path) as bench:
        file_uuid = upload_file(bench.client, image)
        reply = bench.client.post(f"{API}/job", json={"app": "probe", "data_inputs": file_uuid, "runner": "nope"})
        assert reply.status_code == 422 and reply.json()["error"] == "unknown_runner" and "fake" in reply.text
        bench.runner.available = False
        reply = bench.client.post(f"{API}/job", json={"app": "probe", "data_inputs": file_uuid, "runner": "fake"})
        assert reply.status_code == 422 and reply.json()["error"] == "runner_unavailable"
        assert "switched off" in reply.json()["status"]
        assert bench.client.get(f"{API}/jobs").json() == []


def test_a_durable_run_is_followed_again_after_a_restart(tmp_path, image):
    clock, backend = FakeClock(time.time()), FakeBackend()
    scripts = {"first": Script(seconds=20), "second": Script(seconds=1)}
    with Bench(tmp_path, scripts, clock=clock, backend=backend) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        bench.tick()
        assert bench.status(job_id)["state"] == "RUNNING"
    assert len(backend.runs) == 1  # the appliance stopped; the run goes on
    clock.advance(30)
    with Bench(tmp_path, scripts, clock=clock, backend=backend) as bench:
        assert bench.status(job_id)["state"] == "RUNNING"
        bench.tick()  # the first step ended while the appliance was away
        assert bench.status(job_id)["status"] == "running second (step 2 of 2)"
        bench.tick(2)
        assert bench.status(job_id)["state"] == "SUCCESS"
        assert "following first in fake-0 again" in bench.client.get(f"{API}/job/{job_id}/log").text
    assert backend.submitted == [f"caesar-appliance-{job_id}-1-1", f"caesar-appliance-{job_id}-1-2"]


def test_a_run_that_does_not_outlive_the_appliance_is_stopped_and_run_again_once(tmp_path, image):
    clock, backend = FakeClock(time.time()), FakeBackend()
    scripts = {"first": Script(seconds=20), "second": Script(seconds=1)}
    bench = Bench(tmp_path, scripts, clock=clock, backend=backend, durable=False)
    bench.client.__enter__()
    job_id = bench.submit(upload_file(bench.client, image))
    bench.tick()
    # a crash: the appliance never stops its runs; the next one finds them
    bench.appliance.lock.release()
    with Bench(tmp_path, scripts, clock=clock, backend=backend, durable=False) as again:
        status = again.status(job_id)
        assert status["state"] == "PENDING" and "re-queued" in status["status"]
        assert backend.runs[f"caesar-appliance-{job_id}-1-1"].exit_code == -9  # the orphan was stopped
        again.tick()
        again.tick(21)
        again.tick(2)
        assert again.status(job_id)["state"] == "SUCCESS"
        assert again.client.get(f"{API}/job/{job_id}").json()["cores"] == 1
        steps = again.appliance.engine.steps_of(job_id)
        assert [(s.attempt, s.name, s.state) for s in steps] == [
            (1, "first", "lost"), (1, "second", "waiting"), (2, "first", "ended"), (2, "second", "ended")
        ]  # fmt: skip


def test_a_parent_goes_on_when_all_its_children_have_ended(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=5), "second": Script(seconds=1)}) as bench:
        file_uuid = upload_file(bench.client, image)
        bench.appliance.apps.apps["mosaic"].files = [file_uuid] * 3
        parent = bench.submit(file_uuid, app="mosaic")
        bench.tick()  # the parent fans out
        assert bench.status(parent)["status"] == "waiting for its 3 child jobs"
        children = [j for j in bench.client.get(f"{API}/jobs").json() if j["parent_id"] == parent]
        assert len(children) == 3 and {c["app"] for c in children} == {"probe"}
        bench.tick()
        assert {bench.status(c["job_id"])["state"] for c in children} == {"RUNNING"}
        assert bench.status(parent)["state"] == "RUNNING"
        bench.tick(6)
        bench.tick(2)
        assert {bench.status(c["job_id"])["state"] for c in children} == {"SUCCESS"}
        assert bench.status(parent)["state"] == "SUCCESS"  # in the same tick: all children ended, it collected
        assert bench.client.delete(f"{API}/job/{parent}").status_code == 200
        assert bench.client.get(f"{API}/jobs").json() == []  # its children went with it


def test_a_parent_fails_when_a_child_fails_and_cancels_its_children(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=5, exit_code=2)}) as bench:
        file_uuid = upload_file(bench.client, image)
        bench.appliance.apps.apps["mosaic"].files = [file_uuid]
        parent = bench.submit(file_uuid, app="mosaic")
        bench.tick()
        bench.tick()
        bench.tick(6)
        bench.tick()
        status = bench.status(parent)
        assert status["state"] == "FAILURE" and "1 of 1 child jobs did not succeed" in status["status"]
    with Bench(tmp_path / "b", {"first": Script(seconds=500)}) as bench:
        file_uuid = upload_file(bench.client, image)
        bench.appliance.apps.apps["mosaic"].files = [file_uuid] * 2
        parent = bench.submit(file_uuid, app="mosaic")
        bench.tick()
        bench.tick()
        assert bench.client.post(f"{API}/job/{parent}/cancel").json()["state"] == "CANCELING"
        bench.tick()
        bench.tick()
        children = [j for j in bench.client.get(f"{API}/jobs").json() if j["parent_id"] == parent]
        assert {c["state"] for c in children} == {"CANCELED"}
        bench.tick()
        assert bench.status(parent)["state"] == "CANCELED"


def test_the_tarball_of_a_job_canceled_while_running_has_its_log(tmp_path, image):
    with Bench(tmp_path, {"first": Script(seconds=100, output="working\n")}) as bench:
        job_id = bench.submit(upload_file(bench.client, image))
        bench.tick()
        bench.tick(2)
        bench.client.post(f"{API}/job/{job_id}/cancel")
        bench.tick()
        bench.tick()
        assert bench.status(job_id)["state"] == "CANCELED"
        folder = bench.appliance.jobs.folder(bench.appliance.jobs.get("anonymous", job_id))
        with tarfile.open(folder / f"job_{job_id}.tar.gz") as tar:
            log = tar.extractfile(f"job_{job_id}/job.log").read().decode()
        assert "working" in log and "CANCELED" in log
