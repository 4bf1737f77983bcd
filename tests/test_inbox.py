"""The inbox folder with real files: good, bad, still growing, present at start, and left midway by a crash."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

from appliance.core import Appliance
from appliance.inbox import REJECTED, TAKING
from tests.conftest import make_settings, write_image

SETTLE = 0.5


def inbox_settings(tmp_path: Path, **overrides: object):
    return make_settings(tmp_path / "home", inbox_settle_seconds=SETTLE, **overrides)


def wait_until(condition, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def stored(appliance: Appliance) -> list:
    return appliance.files.list(appliance.settings.user, limit=1000)[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_good_and_bad_files(tmp_path):
    settings = inbox_settings(tmp_path)
    inbox = settings.inbox_path
    with_app = Appliance(settings)
    with_app.start()
    try:
        source = write_image(tmp_path / "field.fits")
        shutil.copy(source, inbox / "field.fits")
        (inbox / "notes.txt").write_text("not an image")
        (inbox / "fake.fits").write_bytes(b"SIMPLE  = nonsense" * 300)
        cube = write_image(tmp_path / "cube.fits", shape=(3, 16, 16))
        shutil.copy(cube, inbox / "cube.fits")
        (inbox / ".partial.fits").write_bytes(b"hidden: left alone")

        records = wait_until(lambda: stored(with_app), what="the good file stored")
        assert [(r.filename_orig, r.tag, r.sha256) for r in records] == [("field.fits", "inbox", sha256(source))]
        rejected = inbox / REJECTED
        wait_until(lambda: len(list(rejected.glob("*.reason.txt"))) == 3, what="three files rejected")
        reasons = {p.name.removesuffix(".reason.txt"): p.read_text() for p in rejected.glob("*.reason.txt")}
        assert set(reasons) == {"notes.txt", "fake.fits", "cube.fits"}
        assert "not a FITS file name" in reasons["notes.txt"]
        assert "2-D" in reasons["cube.fits"] or "image" in reasons["cube.fits"]
        assert (rejected / "cube.fits").read_bytes() == cube.read_bytes()  # the rejected file is kept as it was
        assert sorted(p.name for p in inbox.iterdir()) == [".partial.fits", TAKING, REJECTED]
        assert not list((inbox / TAKING).iterdir())
    finally:
        with_app.stop()


def test_a_growing_file_is_taken_only_once_complete(tmp_path):
    settings = inbox_settings(tmp_path)
    source = write_image(tmp_path / "big.fits", shape=(512, 512))
    data = source.read_bytes()
    appliance = Appliance(settings)
    appliance.start()
    try:
        target = settings.inbox_path / "big.fits"
        written = threading.Event()

        def slow_copy():  # a slow network copy: a piece every 0.2 s (under the settle time) for about 3 s
            with target.open("wb") as f:
                for start in range(0, len(data), len(data) // 15):
                    f.write(data[start : start + len(data) // 15])
                    f.flush()
                    time.sleep(0.2)
            written.set()

        copier = threading.Thread(target=slow_copy)
        copier.start()
        while not written.is_set():
            assert stored(appliance) == [], "taken while still growing"
            assert not list((settings.inbox_path / REJECTED).iterdir())
            time.sleep(0.05)
        copier.join()
        records = wait_until(lambda: stored(appliance), what="the file stored once complete")
        assert len(records) == 1 and records[0].sha256 == hashlib.sha256(data).hexdigest()
        assert not target.exists()
    finally:
        appliance.stop()


def test_files_present_at_start_and_left_midway(tmp_path):
    """At start: files already in the inbox are taken; a file left in .taking/ by a crash before it was stored is
    stored once; one left after it was stored is not stored twice."""
    settings = inbox_settings(tmp_path)
    first_image = write_image(tmp_path / "a.fits")
    appliance = Appliance(settings)
    appliance.start()
    try:
        shutil.copy(first_image, settings.inbox_path / "a.fits")
        wait_until(lambda: stored(appliance), what="a.fits stored")
    finally:
        appliance.stop()

    taking = settings.inbox_path / TAKING
    shutil.copy(first_image, taking / "a.fits")  # crashed after storing it, before removing it
    second = write_image(tmp_path / "b.fits", shape=(40, 48))
    shutil.copy(second, taking / "b.fits")  # crashed before storing it
    third = write_image(tmp_path / "c.fits", shape=(32, 32))
    shutil.copy(third, settings.inbox_path / "c.fits")  # arrived while the appliance was stopped

    appliance = Appliance(settings)
    appliance.start()
    try:
        records = wait_until(lambda: len(stored(appliance)) == 3 and stored(appliance), what="b and c stored")
        assert sorted(r.filename_orig for r in records) == ["a.fits", "b.fits", "c.fits"]
        assert not list(taking.iterdir())
        time.sleep(2 * SETTLE)
        assert len(stored(appliance)) == 3
    finally:
        appliance.stop()


def test_automatic_job_with_the_default_app(tmp_path, sky):
    path, _ = sky
    settings = inbox_settings(tmp_path, inbox_app="sep", inbox_options={"seedthr": 6.0})
    appliance = Appliance(settings)
    appliance.start()
    try:
        shutil.copy(path, settings.inbox_path / "sky.fits")
        record = wait_until(lambda: stored(appliance), what="the file stored")[0]

        def ended():
            jobs, _ = appliance.jobs.list(settings.user, file_uuid=record.uuid)
            return jobs if jobs and jobs[0].state not in ("PENDING", "STARTED", "RUNNING") else None

        jobs = wait_until(ended, timeout=120, what="the inbox job ended")
        assert [(j.app, j.state, j.tag, j.options["seedthr"]) for j in jobs] == [("sep", "SUCCESS", "inbox", 6.0)]
    finally:
        appliance.stop()


def test_bad_inbox_job_settings_stop_the_start(tmp_path):
    from appliance.errors import ConfigError

    for overrides in ({"inbox_app": "nosuchfinder"}, {"inbox_app": "sep", "inbox_options": {"seedthr": "high"}}):
        appliance = Appliance(inbox_settings(tmp_path, **overrides))
        try:
            appliance.check()
        except ConfigError as exc:
            assert "inbox_app" in exc.message
        else:
            raise AssertionError(f"{overrides} accepted")
