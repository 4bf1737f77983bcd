"""The data store without HTTP: atomic registration, clean failure, and recovery after a crash."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from sqlalchemy import text

from appliance.core import Appliance
from appliance.errors import InvalidRequest, UnsupportedType
from appliance.quicklook import quicklook_png
from tests.conftest import make_settings


def test_upload_is_invisible_until_finished_and_aborts_cleanly(appliance, image):
    store = appliance.files
    with store.begin_upload("anonymous", "field.fits") as upload:
        upload.write(image.read_bytes())
        assert upload.temp_path.exists()
        assert store.list("anonymous") == ([], 0)
        assert not list(appliance.settings.data_dir.rglob("*.fits"))
    assert not upload.temp_path.exists()


def test_content_is_sniffed_on_the_first_bytes(appliance):
    upload = appliance.files.begin_upload("anonymous", "x.fits")
    upload.write(b"SIM")
    with pytest.raises(UnsupportedType):
        upload.write(b"PLY NOT FITS", b"more")
    upload.abort()


def test_database_failure_leaves_no_bytes_behind(appliance, image):
    with appliance.db.engine.begin() as connection:
        connection.execute(
            text("CREATE TRIGGER refuse BEFORE INSERT ON files BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        )
    upload = appliance.files.begin_upload("anonymous", "field.fits")
    upload.write(image.read_bytes())
    with pytest.raises(Exception, match="disk says no"):
        upload.finish()
    assert not [p for p in appliance.settings.data_dir.rglob("*") if p.is_file()]
    assert not list(appliance.files.uploads_tmp.iterdir())


def test_recover_removes_temp_files_and_unregistered_bytes_only(settings, image):
    first = Appliance(settings)
    first.start()
    upload = first.files.begin_upload("anonymous", "kept.fits")
    upload.write(image.read_bytes())
    kept = upload.finish(tag="keep")
    first.stop()

    user_dir = settings.data_dir / "anonymous"
    orphan = user_dir / f"{uuidlib.uuid4().hex}.fits"  # renamed into place, then the process died before the insert
    orphan.write_bytes(image.read_bytes())
    stray = settings.tmp_dir / "uploads" / f"{uuidlib.uuid4().hex}.part"
    stray.write_bytes(b"SIMPLE  = half an upload")
    notes = user_dir / "README.txt"  # not ours: never touched
    notes.write_text("my notes")

    second = Appliance(settings)
    second.start()
    try:
        assert not orphan.exists() and not stray.exists() and notes.exists()
        assert (user_dir / f"{kept.uuid}.fits").read_bytes() == image.read_bytes()
        assert [r.uuid for r in second.files.list("anonymous")[0]] == [kept.uuid]
    finally:
        second.stop()


def test_cached_copies_being_made_at_a_crash_and_copies_of_gone_files_are_removed_at_start(settings, image):
    first = Appliance(settings)
    first.start()
    kept = first.files.add("anonymous", image)
    quicklook_png(kept, first.files.path(kept), settings.cache_dir)  # and the viewer's copy
    first.stop()

    cache = settings.cache_dir
    gone = uuidlib.uuid4().hex  # deleted, then the process died before its cached copies were removed
    leftovers = [
        cache / "view" / f".{kept.uuid}.fits.part",  # a viewer's copy being written
        cache / "quicklook" / f".{kept.uuid}.png.part.png",
        cache / "plots" / uuidlib.uuid4().hex / ".flux-histogram.part.png",
        cache / "view" / f"{gone}.fits",
        cache / "quicklook" / f"{gone}.png",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"SIMPLE  = half a copy")
    plot = cache / "plots" / uuidlib.uuid4().hex / "flux-histogram.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"a finished plot")

    second = Appliance(settings)
    second.start()
    try:
        assert not [p for p in leftovers if p.exists()]
        kept_copies = {f"{kept.uuid}.fits", f"{kept.uuid}.png", "flux-histogram.png"}
        assert {p.name for p in cache.rglob("*") if p.is_file()} == kept_copies
    finally:
        second.stop()


def test_deleting_a_file_removes_its_cached_copies_made_or_being_made(appliance, image):
    record = appliance.files.add("anonymous", image)
    other = appliance.files.add("anonymous", image)
    cache = appliance.settings.cache_dir
    for made in (record, other):
        quicklook_png(made, appliance.files.path(made), cache)
    (cache / "view" / f".{record.uuid}.fits.part").write_bytes(b"SIMPLE  = being written")
    (cache / "quicklook" / f".{record.uuid}.png.part.png").write_bytes(b"being drawn")
    appliance.files.delete("anonymous", record.uuid)
    assert {p.name for p in cache.rglob("*") if p.is_file()} == {f"{other.uuid}.fits", f"{other.uuid}.png"}


def test_users_and_names_are_checked(appliance):
    with pytest.raises(InvalidRequest):
        appliance.files.begin_upload("../etc", "x.fits")
    with pytest.raises(InvalidRequest, match="no file name"):
        appliance.files.begin_upload("anonymous", "dir/")


def test_file_names_keep_only_the_last_component(appliance, image):
    upload = appliance.files.begin_upload("anonymous", "..\\..\\windows\\sky\x07.FITS")
    upload.write(image.read_bytes())
    record = upload.finish()
    assert record.filename_orig == "sky.FITS" and record.fileext == "fits"


def test_files_are_per_user(appliance, image):
    upload = appliance.files.begin_upload("alice", "a.fits")
    upload.write(image.read_bytes())
    record = upload.finish()
    assert appliance.files.list("bob") == ([], 0)
    with pytest.raises(Exception, match="not found"):
        appliance.files.get("bob", record.uuid)


def test_second_instance_on_the_same_home_is_refused(settings, tmp_path):
    from appliance.errors import AlreadyRunning

    first = Appliance(settings)
    first.start()
    try:
        with pytest.raises(AlreadyRunning, match="already running"):
            Appliance(settings).start()
        Appliance(make_settings(tmp_path / "other")).lock.acquire()  # another home is fine
    finally:
        first.stop()
    again = Appliance(settings)
    again.start()
    again.stop()
