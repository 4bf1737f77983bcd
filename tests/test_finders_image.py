"""The finders image (./manage image) runs the appliance's own finder steps as the local runner does: the same
steps, run by the container runner in the image and by the local runner here, write the same tables, row for row."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from runners import Handle, RunSpec, Tool
from runners.container import ContainerRunner
from runners.local import LocalRunner

pytestmark = pytest.mark.e2e


def run_steps(runner, folder: Path, steps: list[RunSpec], timeout: float = 600) -> list[bytes]:
    """Each step in turn to its end (exit code 0); their logs."""
    logs = []
    for spec in steps:
        handle: Handle = runner.submit(spec)
        deadline = time.monotonic() + timeout
        while (status := runner.status([handle])[0]).state not in ("ended", "lost"):
            assert time.monotonic() < deadline, f"{spec.name} did not end in {timeout} s"
            time.sleep(0.1)
        logs.append(runner.logs(handle, 0))
        assert status.state == "ended" and status.exit_code == 0, logs[-1].decode(errors="replace")
        runner.release(handle)
    return logs


def same_rows(a: Table, b: Table, rtol: float = 1e-12, error_rtol: float | None = None) -> None:
    assert a.colnames == b.colnames and len(a) == len(b) > 0
    for name in a.colnames:
        if a[name].dtype.kind == "f":
            tolerance = error_rtol if error_rtol and name.startswith("err_") else rtol
            np.testing.assert_allclose(a[name], b[name], rtol=tolerance, atol=0, equal_nan=True, err_msg=name)
        elif name != "uuid":  # aegean's random id of each row
            assert list(a[name]) == list(b[name]), name


@pytest.fixture
def folders(tmp_path: Path, shared_data: Path) -> dict[str, Path]:
    """A job folder per runner, each with the real SCORPIO S17 field as its prepared input."""
    made = {}
    for name in ("local", "container"):
        made[name] = tmp_path / name
        made[name].mkdir()
        shutil.copy(shared_data / "ScorpioS17Field.fits", made[name] / "input.fits")
    return made


def runners(finders_image: str) -> dict[str, object]:
    return {"local": LocalRunner(cores=1), "container": ContainerRunner(engine="podman", image=finders_image)}


def test_sep_in_the_finders_image_finds_what_it_finds_here(finders_image, folders):
    parameters = {"image": "input.fits", "output": "sep_objects.fits", "seedthr": 5.0, "mergethr": 3.0,
                  "npixmin": 5, "bkgbox": 0, "deblend-nthresh": 32, "deblend-cont": 0.005}  # fmt: skip
    for name, runner in runners(finders_image).items():
        folder = folders[name]
        spec = RunSpec(name="sep", command=Tool("appliance.apps.sep_run", ("sep_parameters.json",)), workdir=folder,
                       job_id=f"sep-{name}-{folder.parent.name[-12:]}", inputs=("input.fits",),
                       files={"sep_parameters.json": json.dumps(parameters)})  # fmt: skip
        run_steps(runner, folder, [spec])
    same_rows(Table.read(folders["local"] / "sep_objects.fits"), Table.read(folders["container"] / "sep_objects.fits"))


def test_bane_and_aegean_in_the_finders_image_find_what_they_find_here(finders_image, folders):
    bane = ("--cores", "1", "--grid", "20", "20", "--box", "100", "100", "input.fits")
    aegean = ("--autoload", "--cores", "1", "--island", "--seedclip", "5", "--floodclip", "4", "--table",
              "aegean.vot", "input.fits")  # fmt: skip
    for name, runner in runners(finders_image).items():
        folder = folders[name]
        job = f"aegean-{name}-{folder.parent.name[-12:]}"
        steps = [RunSpec(name="BANE", command=Tool("BANE", bane), workdir=folder, job_id=job, step="1"),
                 RunSpec(name="aegean", command=Tool("aegean", aegean), workdir=folder, job_id=job, step="2")]  # fmt: skip
        run_steps(runner, folder, steps)
    # the same rows; aegean's fitted values differ between the two runs from the ninth digit on, one of its
    # position-angle errors from the sixth
    for product in ("aegean_comp.vot", "aegean_isle.vot"):
        same_rows(
            Table.read(folders["local"] / product),
            Table.read(folders["container"] / product),
            rtol=1e-7,
            error_rtol=1e-5,
        )


def test_pybdsf_in_the_finders_image_finds_what_it_finds_here(finders_image, shared_data, tmp_path):
    process_image = {"thresh": "hard", "thresh_pix": 5.0, "thresh_isl": 3.0, "frequency": 1.4e9, "quiet": True}
    parameters = {"image": "input.fits", "process_image": process_image}
    folders = {}
    for name, runner in runners(finders_image).items():
        folders[name] = folder = tmp_path / name
        folder.mkdir()
        shutil.copy(shared_data / "caesar-runs" / "synthetic-512" / "input.fits", folder / "input.fits")
        spec = RunSpec(name="pybdsf", command=Tool("appliance.apps.pybdsf_run", ("pybdsf_parameters.json",)),
                       workdir=folder, job_id=f"pybdsf-{name}-{tmp_path.name[-12:]}", inputs=("input.fits",),
                       files={"pybdsf_parameters.json": json.dumps(parameters)})  # fmt: skip
        run_steps(runner, folder, [spec])
    for product in ("pybdsf_gaul.fits", "pybdsf_srl.fits", "pybdsf_isl.fits"):
        same_rows(Table.read(folders["local"] / product), Table.read(folders["container"] / product), rtol=1e-7,
                  error_rtol=1e-5)  # fmt: skip
