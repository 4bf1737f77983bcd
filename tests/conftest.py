"""Shared fixtures: settings on a temp home, the in-process API client, synthetic FITS images, the real data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from astropy.io import fits
from litestar.testing import TestClient

from appliance.config import Settings, load_settings
from appliance.core import Appliance
from web.app import create_app

if TYPE_CHECKING:
    from tests.slurm import Cluster

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CAESAR_APPLIANCE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real radio images and caesar outputs kept outside the repository (present here and in CI)."""
    return find_shared_data()


def find_shared_data() -> Path:
    if not (SHARED_DATA / "ScorpioS17Field.fits").is_file():
        pytest.skip(
            f"real test data not found at {SHARED_DATA}: it lives beside the repository (../shared/data) and is not "
            "part of a clone; set CAESAR_APPLIANCE_TEST_DATA to its folder to run these tests"
        )
    return SHARED_DATA


def make_settings(home: Path, **overrides: object) -> Settings:
    """Settings as the appliance would load them with no user file and no environment, on ``home``."""
    return load_settings(cli={"home": str(home), "port": 0}, env={}, config_file=None).replace(**overrides)


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the developer's own config file and environment out of every test."""
    for kind in ("CONFIG", "STATE"):  # the settings file; the list of running appliances
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path_factory.mktemp(f"xdg-{kind.lower()}")))
    for name in list(os.environ):
        if name.startswith("CAESAR_APPLIANCE_") and name != "CAESAR_APPLIANCE_TEST_DATA":
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture
def appliance(settings: Settings) -> Iterator[Appliance]:
    """A started appliance (lock, database, store, queue) without HTTP."""
    app = Appliance(settings)
    app.start()
    yield app
    app.stop()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real Litestar app in-process, started and stopped with the test."""
    with api_client(settings) as test_client:
        yield test_client


def write_image(
    path: Path,
    shape: tuple[int, ...] = (64, 64),
    header: dict[str, object] | None = None,
    wcs: bool = True,
    beam: bool = True,
) -> Path:
    """A synthetic radio image: noise plus one Gaussian, SIN projection, 1.5" pixels, 6.5" beam, 1.4 GHz."""
    rng = np.random.default_rng(7)
    data = rng.normal(0.0, 1e-4, shape).astype(np.float32)
    ny, nx = shape[-2:]
    y, x = np.mgrid[0:ny, 0:nx]
    data[..., :, :] += (5e-3 * np.exp(-((x - nx / 2) ** 2 + (y - ny / 2) ** 2) / (2 * 1.8**2))).astype(np.float32)
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    h["BUNIT"] = "JY/BEAM"
    if wcs:
        h.update(
            CTYPE1="RA---SIN",
            CTYPE2="DEC--SIN",
            CRVAL1=150.0,
            CRVAL2=-30.0,
            CRPIX1=nx / 2 + 1,
            CRPIX2=ny / 2 + 1,
            CDELT1=-1.5 / 3600,
            CDELT2=1.5 / 3600,
            CUNIT1="deg",
            CUNIT2="deg",
            RADESYS="ICRS",
        )
    if beam:
        h.update(BMAJ=6.5 / 3600, BMIN=5.0 / 3600, BPA=30.0)
    for key, value in (header or {}).items():
        h[key] = value
    hdu.writeto(path, overwrite=True)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "field.fits")


API = "/caesar/api/v1.0"
LIVE = ("PENDING", "STARTED", "RUNNING", "CANCELING")


def upload_file(client, path: Path) -> str:
    reply = client.post(f"{API}/upload", files={"file": (path.name, path.read_bytes())})
    assert reply.status_code == 200, reply.text
    return reply.json()["uuid"]


def wait_for_job(client, job_id: str, until=lambda s: s["state"] not in LIVE, timeout: float = 300) -> dict:
    """Poll the job's status until ``until`` holds; returns the last status."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"{API}/job/{job_id}/status").json()
        if until(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {status}")


@pytest.fixture(scope="session")
def sky(tmp_path_factory: pytest.TempPathFactory):
    """A 256² synthetic image with 20 point sources of known position and flux (SNR 8 to 200), and its truth."""
    from appliance.testing import make_sky

    path = tmp_path_factory.mktemp("sky") / "sky.fits"
    truth = make_sky(path, size=256, n_sources=20)
    return path, truth


def api_client(settings: Settings, **appliance_options: object) -> TestClient:
    """An in-process client on its own appliance (``appliance_options``: given runners, a clock, no monitor); use as
    a context manager."""
    appliance = Appliance(settings, **appliance_options)
    test_client = TestClient(create_app(appliance), base_url="http://127.0.0.1:8765")
    test_client.headers["Authorization"] = f"Bearer {appliance.access.api_token}"
    test_client.appliance = appliance  # type: ignore[attr-defined]
    return test_client


@pytest.fixture(scope="session")
def slow_sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024² sky on which LONG_JOB runs for minutes: for cancel, time-out, shutdown and crash tests."""
    from appliance.testing import make_sky

    path = tmp_path_factory.mktemp("slow") / "slow.fits"
    make_sky(path, size=1024, n_sources=50)
    return path


# BANE sampling every 5 pixels with a 200-pixel box on 1024² takes minutes on one core
LONG_JOB = {"bkggrid": 5, "bkgbox": 200, "ncores": 1}


def group_members(pgid: int, timeout: float = 5.0) -> list[str]:
    """Processes still alive in the process group ``pgid`` (zombies waiting to be reaped do not count), after up to
    ``timeout`` seconds for them to go."""
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while True:
        members = []
        for process in psutil.process_iter(["pid", "status", "cmdline"]):
            try:
                if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    members.append(f"{process.pid} {process.info['status']} {' '.join(process.info['cmdline'] or [])}")
            except (ProcessLookupError, PermissionError):
                pass
        if not members or time.monotonic() > deadline:
            return members
        time.sleep(0.1)


def sky_ellipse_the_long_way(wcs, x: float, y: float, major_px: float, minor_px: float, angle_deg: float):
    """Full major and minor axes (arcsec) and PA (deg east of north) of a pixel ellipse on the sky, from the sky
    positions of 3 600 points around it: the farthest from the centre lie on the major axis. Slow, and independent of
    the appliance's own way."""
    around = np.deg2rad(np.linspace(0, 180, 3601))
    t = np.deg2rad(angle_deg)
    ex, ey = major_px / 2 * np.cos(around), minor_px / 2 * np.sin(around)
    centre = wcs.pixel_to_world(x, y)
    points = wcs.pixel_to_world(x + ex * np.cos(t) - ey * np.sin(t), y + ex * np.sin(t) + ey * np.cos(t))
    distance = centre.separation(points).arcsec
    far = np.argmax(distance)
    return 2 * distance[far], 2 * distance.min(), centre.position_angle(points[far]).deg % 180.0


def angle_difference(a, b):
    """|a - b| for axis directions, in [0, 90] deg."""
    return np.abs((np.asarray(a) - np.asarray(b) + 90.0) % 180.0 - 90.0)


def published_catalog(image: Path, truth, drop: int = 3, extra: int = 2):
    """A catalog "published" for the sky of ``image``: its truth without the first ``drop`` sources, plus ``extra``
    made-up sources where the image has none and one far off the image, with survey-style columns (RAJ2000 and
    DEJ2000 in degrees, S_int in mJy). Returns the table and where each class must be: the dropped sources (only in
    A), the made-up ones (only in B), the kept ones (matched), as (ra, dec) arrays, and the rows off the image."""
    from astropy import units as u
    from astropy.table import Table
    from astropy.wcs import WCS

    wcs = WCS(fits.getheader(image)).celestial
    ny, nx = fits.getdata(image).shape[-2:]
    empty = []
    for y in range(24, ny - 24, 8):
        for x in range(24, nx - 24, 8):
            far_from_sources = np.hypot(truth["x"] - x, truth["y"] - y).min() > 40
            if far_from_sources and all(np.hypot(x - ex, y - ey) > 40 for ex, ey in empty):
                empty.append((x, y))
    made_up = wcs.pixel_to_world(*np.array(empty[:extra], dtype=float).T)
    assert len(made_up) == extra, "the image has no room for the made-up sources"
    kept = truth[drop:]
    ra = np.concatenate([kept["ra"], made_up.ra.deg, [wcs.wcs.crval[0] + 2.0]])
    dec = np.concatenate([kept["dec"], made_up.dec.deg, [wcs.wcs.crval[1]]])
    flux = np.concatenate([kept["int_flux"] * 1e3, np.full(extra + 1, 5.0)])
    table = Table({"RAJ2000": ra, "DEJ2000": dec, "S_int": flux}, units={"RAJ2000": u.deg, "DEJ2000": u.deg,
                                                                           "S_int": u.mJy})  # fmt: skip
    where = {
        "matched": np.column_stack([kept["ra"], kept["dec"]]),
        "only_a": np.column_stack([truth["ra"][:drop], truth["dec"][:drop]]),
        "only_b": np.column_stack([made_up.ra.deg, made_up.dec.deg]),
    }
    return table, where, 1


@pytest.fixture(scope="session")
def container_engine() -> Iterator[dict[str, str]]:
    """A rootful podman on the tests' own storage, with the Debian base image; its variables set for the session.
    Skips when it cannot be had here (not root, podman not installable)."""
    from tests import containers

    try:
        env = containers.prepare_podman()
    except containers.EngineUnavailable as exc:
        pytest.skip(f"no container engine for these tests: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        containers.remove_containers()
        containers.build_base_image()
        yield env
        containers.remove_containers()


@pytest.fixture(scope="session")
def finders_image(container_engine: dict[str, str]) -> str:
    """caesar-appliance-finders:<version> (./manage image), built on the tests' Debian base when missing or stale."""
    from tests import containers

    return containers.finders_image()


@pytest.fixture(scope="session")
def caesar_replay_image(container_engine: dict[str, str]) -> str:
    """FindSource replaying the recorded caesar runs of the shared data (tests/images/caesar-replay)."""
    from tests import containers

    return containers.caesar_replay_image(find_shared_data())


@pytest.fixture(scope="session")
def cutex_image(finders_image: str) -> str:
    """A CuTEx stand-in after caesar-rest's job-image contract (tests/images/cutex-curvature)."""
    from tests import containers

    return containers.cutex_image(finders_image)


@pytest.fixture(scope="session")
def docker_engine(container_engine: dict[str, str]) -> Iterator[str]:
    """Debian's dockerd, started for the session on its own socket (DOCKER_HOST set) and stopped after, with the
    Debian base image copied in from podman."""
    from tests import containers

    try:
        daemon = containers.start_dockerd()
    except containers.EngineUnavailable as exc:
        pytest.skip(f"no docker daemon for these tests: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", containers.DOCKER_HOST)
        patch.setenv("DOCKER_BUILDKIT", "0")  # the 28.x client here has no buildx
        containers.remove_docker_containers()
        yield containers.DOCKER_HOST
        containers.remove_docker_containers()
        containers.stop_dockerd(daemon)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """A real Slurm 22.05 cluster on loopback (munged, MariaDB + slurmdbd, slurmctld, one slurmd, slurmrestd), started
    once for the session in its own folder on free ports, with SLURM_CONF set for the session; a tests.slurm.Cluster.
    Skips when it cannot be had here (not root, the Debian packages not installable); a daemon that does not start is
    an error showing the daemons' logs."""
    from tests import slurm

    try:
        slurm.prepare()
        cluster = slurm.Cluster().start()
    except slurm.SlurmUnavailable as exc:
        pytest.skip(f"no Slurm cluster for these tests: {exc}")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in cluster.env.items():
            patch.setenv(key, value)
        try:
            yield cluster
        finally:
            cluster.stop()
