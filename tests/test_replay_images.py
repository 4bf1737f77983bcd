"""The test images of the container-only finders, run by the container runner: caesar's FindSource (and mpirun
FindSourceMPI) replaying recorded real runs, and a CuTEx stand-in following caesar-rest's job-image contract."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from appliance.apps.caesar import Caesar, read_caesar_catalogs
from runners import RunSpec, RunStatus
from runners.container import ContainerRunner

pytestmark = pytest.mark.e2e

FINDSOURCE = "/opt/Software/caesar/install/bin/FindSource"


def run(runner: ContainerRunner, spec: RunSpec, timeout: float = 120) -> tuple[RunStatus, str]:
    handle = runner.submit(spec)
    deadline = time.monotonic() + timeout
    while (status := runner.status([handle])[0]).state not in ("ended", "lost"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return status, runner.logs(handle, 0).decode()


def caesar_job(folder: Path, image: Path, config: str | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    shutil.copy(image, folder / "input.fits")
    caesar = Caesar()
    (folder / "caesar.cfg").write_text(config if config is not None else caesar.config_text(caesar.schema.validate({})))
    return folder


def same_catalogs(a, b) -> None:
    for level in ("islands", "components"):
        left, right = getattr(a, level), getattr(b, level)
        assert len(left) == len(right) > 0
        for name in left.colnames:
            assert list(left[name]) == list(right[name]) or np.allclose(left[name], right[name], equal_nan=True), name


@pytest.mark.parametrize("mpi", [False, True], ids=["FindSource", "mpirun FindSourceMPI"])
def test_findsource_replays_the_recorded_run_of_its_input(caesar_replay_image, shared_data, tmp_path, mpi):
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    folder = caesar_job(tmp_path / "job", recorded / "input.fits")
    argv = ["mpirun", "-np", "2", f"{FINDSOURCE}MPI"] if mpi else [FINDSOURCE]
    runner = ContainerRunner(engine="podman", image=caesar_replay_image)
    spec = RunSpec(name="FindSource", command=[*argv, "--config=caesar.cfg"], workdir=folder, job_id=tmp_path.name,
                   inputs=("input.fits",))  # fmt: skip
    status, log = run(runner, spec)
    assert status.exit_code == 0, log
    assert (
        "is the input of the recorded run synthetic-512" in log
        and "SFinder::Run() - Initializing source finder run" in log
    )
    assert ("2 processes asked for" in log) is mpi
    for name in ("catalog.dat", "catalog.json", "catalog_fitcomp.dat", "catalog_fitcomp.json", "ds9.reg"):
        assert (folder / name).read_bytes() == (recorded / name).read_bytes()
    # what the caesar app reads from the folder is what the recorded run gives
    same_catalogs(read_caesar_catalogs(folder, folder / "input.fits"), read_caesar_catalogs(recorded, folder /
                                                                                              "input.fits"))  # fmt: skip


def test_findsource_tells_a_real_survey_field_by_its_pixels(caesar_replay_image, shared_data, tmp_path):
    folder = caesar_job(tmp_path / "job", shared_data / "ScorpioS17Field.fits")
    runner = ContainerRunner(engine="podman", image=caesar_replay_image)
    spec = RunSpec(name="FindSource", command=[FINDSOURCE, "--config=caesar.cfg"], workdir=folder,
                   job_id=tmp_path.name)  # fmt: skip
    status, log = run(runner, spec)
    assert status.exit_code == 0, log
    assert "recorded run scorpio-s17" in log and "WARN: searchNestedSources = true here, false in the recorded" in log
    assert len(json.loads((folder / "catalog.json").read_text())["sources"]) == 207


def test_findsource_refuses_what_is_not_a_caesar_config_or_an_unknown_image(caesar_replay_image, tmp_path, image):
    runner = ContainerRunner(engine="podman", image=caesar_replay_image)
    folder = caesar_job(tmp_path / "bad-config", image, config="threshold = 5\n")
    spec = RunSpec(name="FindSource", command=[FINDSOURCE, "--config=caesar.cfg"], workdir=folder, job_id="bad-cfg")
    status, log = run(runner, spec)
    assert status.exit_code == 1 and "caesar.cfg is not a caesar config" in log
    folder = caesar_job(tmp_path / "unknown-image", image)
    spec = RunSpec(name="FindSource", command=[FINDSOURCE, "--config=caesar.cfg"], workdir=folder, job_id="unknown")
    status, log = run(runner, spec)
    assert status.exit_code == 1 and "has no recorded run on input.fits" in log
    status, log = run(runner, RunSpec(name="help", command=[FINDSOURCE, "--help"], workdir=folder, job_id="help"))
    assert status.exit_code == 0 and "Usage" in log  # what the caesar app asks of a FindSource before using it


def test_the_cutex_image_follows_the_job_image_contract(cutex_image, shared_data, tmp_path):
    recorded = shared_data / "caesar-runs" / "synthetic-512"
    folder = tmp_path / "job"
    folder.mkdir()
    shutil.copy(recorded / "input.fits", folder / "input.fits")
    env = {"JOB_OPTIONS": "--seedthr=5 --npixmin=4 --npixpsf=2.7", "INPUTFILE": "/job/input.fits", "JOB_DIR": "/job",
           "JOB_OUTDIR": "/job/output"}  # fmt: skip
    runner = ContainerRunner(engine="podman", image=cutex_image)
    status, log = run(runner, RunSpec(name="cutex", command=[], workdir=folder, job_id=tmp_path.name, env=env,
                                      inputs=("input.fits",)))  # fmt: skip
    assert status.exit_code == 0, log
    assert "run_job.sh: CuTEx stand-in on /job/input.fits, options: --seedthr=5" in log
    output = folder / "output"
    assert sorted(p.name for p in output.iterdir()) == ["catalog-input.dat", "catalog-input.json",
                                                        "catalog_fitcomp-input.dat", "catalog_fitcomp-input.json",
                                                        "plot_input.png"]  # fmt: skip
    found = json.loads((output / "catalog-input.json").read_text())["sources"]
    rows = np.loadtxt(output / "catalog-input.dat", usecols=(2, 3))
    assert len(rows) == len(found)
    truth = Table.read(recorded / "truth.csv")
    offsets = [np.hypot(rows[:, 0] - t["x"], rows[:, 1] - t["y"]).min() for t in truth]
    assert max(offsets) < 0.5 and len(found) == len(truth)  # every known source, and nothing else
    status, log = run(runner, RunSpec(name="cutex", command=[], workdir=folder, job_id=f"{tmp_path.name}-bad",
                                      env={**env, "JOB_OPTIONS": "--no-such-option=1"}))  # fmt: skip
    assert status.exit_code != 0 and "unrecognized arguments: --no-such-option=1" in log
