"""The caesar-rest file API in-process: upload, list, inspect, download, delete, and every refusal."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import socket
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from appliance.models import Job, StoredFile
from appliance.testing import ServerProcess
from tests.conftest import api_client, make_settings, wait_for_job, write_image

API = "/caesar/api/v1.0"


def upload(client, path: Path, tag: str | None = None, name: str | None = None):
    data = {"tag": tag} if tag is not None else {}
    return client.post(f"{API}/upload", files={"file": (name or path.name, path.read_bytes())}, data=data)


def stored_everything(client) -> tuple[list[Path], list[Path], int]:
    """Files in the data store, temp files, and DB rows: what a refused upload must leave untouched."""
    settings = client.appliance.settings
    data = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    temp = list((settings.tmp_dir / "uploads").iterdir())
    with client.appliance.db.session() as session:
        rows = session.scalar(select(func.count()).select_from(StoredFile))
    return data, temp, rows


def test_upload_registers_a_validated_fits_and_reports_its_header(client, image):
    reply = upload(client, image, tag="field-1")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "File uploaded with success"
    assert body["filename_orig"] == "field.fits" and body["format"] == "fits" and body["tag"] == "field-1"
    assert body["size_bytes"] == image.stat().st_size
    assert body["size"] == pytest.approx(image.stat().st_size / 2**20)
    assert body["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert uuidlib.UUID(hex=body["uuid"]).hex == body["uuid"]
    assert datetime.fromisoformat(body["date"]).tzinfo is not None
    meta = body["metadata"]
    assert meta["shape"] == [64, 64] and meta["bunit"] == "JY/BEAM" and meta["celestial_wcs"] is True
    assert meta["beam"] == {
        "bmaj_arcsec": pytest.approx(6.5),
        "bmin_arcsec": pytest.approx(5.0),
        "bpa_deg": 30.0,
        "source": "header",
    }
    stored = client.appliance.settings.data_dir / "anonymous" / f"{body['uuid']}.fits"
    assert stored.read_bytes() == image.read_bytes()

    detail = client.get(f"{API}/file/{body['uuid']}").json()
    assert detail["fileid"] == body["uuid"] and detail["metadata"] == meta and detail["tag"] == "field-1"


def test_raw_body_upload_with_tag_and_gzip(client, image, tmp_path):
    packed = tmp_path / "field.fits.gz"
    packed.write_bytes(gzip.compress(image.read_bytes()))
    reply = client.put(f"{API}/upload/{packed.name}", params={"tag": "raw"}, content=packed.read_bytes())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["format"] == "fits.gz" and body["tag"] == "raw" and body["metadata"]["shape"] == [64, 64]
    assert client.get(f"{API}/download/{body['uuid']}").content == packed.read_bytes()


def test_fileids_lists_newest_first_with_paging_and_tag_filter(client, image):
    uuids = [upload(client, image, tag="a" if i % 2 else "b").json()["uuid"] for i in range(5)]
    reply = client.get(f"{API}/fileids")
    listed = reply.json()
    assert isinstance(listed, list) and [f["fileid"] for f in listed] == uuids[::-1]
    assert set(listed[0]) >= {"fileid", "filename_orig", "fileext", "filesize", "filedate", "metadata", "tag"}
    assert reply.headers["x-total-count"] == "5"

    page = client.get(f"{API}/fileids", params={"limit": 2, "offset": 2})
    assert [f["fileid"] for f in page.json()] == uuids[::-1][2:4]
    assert "offset=4" in page.headers["link"] and 'rel="next"' in page.headers["link"]
    assert "link" not in client.get(f"{API}/fileids", params={"limit": 2, "offset": 4}).headers

    tagged = client.get(f"{API}/fileids", params={"tag": "a"})
    assert {f["fileid"] for f in tagged.json()} == {uuids[1], uuids[3]} and tagged.headers["x-total-count"] == "2"


def test_names_keep_only_characters_that_print(client, image):
    """A bidi override would show "evil\u202etxt.fits" as "evilstif.txt" in every listing; zero-width, separator
    and control characters hide what a name is. They are removed from the stored name; a tag with them is refused."""
    for sent, stored in [
        ("evil\u202etxt.fits", "eviltxt.fits"),
        ("a\u200bb\u2028c\u2029d\x7fe\ufeff\U000e0001.fits", "abcde.fits"),
        ("Field\u0301 e\u0301.fits", "Field\u0301 é.fits"),
    ]:
        body = upload(client, image, name=sent).json()
        assert body["filename_orig"] == stored
        assert client.get(f"{API}/file/{body['uuid']}").json()["filename_orig"] == stored
    assert upload(client, image, name="\u202e\u200b.fits").status_code == 415  # only the extension is left
    reply = upload(client, image, tag="raw\u202e")
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_tag"


@pytest.mark.e2e
def test_requests_the_http_parser_refuses_are_answered_in_json(tmp_path):
    with ServerProcess(tmp_path / "home") as app:
        host, port = app.url.removeprefix("http://").split(":")
        for request, status, code in [
            (f"GET {API}/health?{'x' * 20000} HTTP/1.1\r\nHost: {host}\r\n\r\n", 414, "uri_too_long"),
            (f"POST {API}/job HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1, 2\r\n\r\n", 400, "invalid_request"),
            (f"POST {API}/job HTTP/1.1\r\nHost: {host}\r\nContent-Length: {'9' * 30}\r\n\r\n", 400, "invalid_request"),
            ("GARBAGE\r\n\r\n", 400, "invalid_request"),
        ]:
            with socket.create_connection((host, int(port)), timeout=10) as connection:
                connection.sendall(request.encode())
                answer = b""
                while chunk := connection.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            assert b"content-type: application/json" in head.lower()
            assert json.loads(body)["error"] == code
        with httpx.Client(base_url=app.api, headers={"Authorization": f"Bearer {app.token}"}) as api:
            assert api.get("/health").status_code == 200  # and the server goes on


def test_the_same_bytes_again_are_kept_and_said_to_be_the_same(client, image):
    first = upload(client, image).json()
    assert first["same_as"] is None
    again = upload(client, image, name="renamed.fits").json()
    assert again["uuid"] != first["uuid"] and again["status"] == "File uploaded with success"
    assert again["same_as"] == {"uuid": first["uuid"], "filename_orig": image.name, "date": first["date"]}
    page = client.get(f"/files/{again['uuid']}", headers={"accept": "text/html"}).text
    assert f'The same bytes as <a href="/files/{first["uuid"]}">{image.name}</a>, uploaded' in page
    assert "The same bytes" not in client.get(f"/files/{first['uuid']}", headers={"accept": "text/html"}).text


def test_download_streams_the_original_bytes_under_the_original_name(client, image):
    file_uuid = upload(client, image, name="Sky Field é.fits").json()["uuid"]
    for method in ("get", "post"):
        reply = getattr(client, method)(f"{API}/download/{file_uuid}")
        assert reply.status_code == 200
        assert reply.content == image.read_bytes()
        assert reply.headers["content-type"] == "application/fits"
        assert reply.headers["content-length"] == str(image.stat().st_size)
        assert reply.headers["accept-ranges"] == "bytes"
        assert "filename*=UTF-8''Sky%20Field%20%C3%A9.fits" in reply.headers["content-disposition"]
    redirect = client.get(f"{API}/download", params={"uuid": file_uuid}, follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"].endswith(f"/download/{file_uuid}")


def test_download_by_parameter_never_redirects_elsewhere_and_refuses_unreadable_forms(client, image):
    file_uuid = upload(client, image).json()["uuid"]
    redirect = client.get(f"{API}/download", params={"uuid": f"../delete/{file_uuid}"}, follow_redirects=False)
    assert redirect.headers["location"] == f"{API}/download/..%2Fdelete%2F{file_uuid}"
    assert client.get(redirect.headers["location"]).status_code == 404
    assert client.get(f"{API}/file/{file_uuid}").status_code == 200  # not deleted through the redirect
    for charset, value in (("utf-8", b"\xff"), ("no-such-charset", b"abc")):
        form = (
            (
                f'--x\r\nContent-Disposition: form-data; name="uuid"\r\nContent-Type: text/plain; charset={charset}'
                "\r\n\r\n"
            ).encode()
            + value
            + b"\r\n--x--\r\n"
        )
        reply = client.post(
            f"{API}/download", content=form, headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request", reply.text


def test_a_form_field_in_an_unknown_charset_is_refused(client, image):
    """The tag comes after the file: the file's bytes, already received, are discarded."""
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="f.fits"\r\n\r\n'
        + image.read_bytes()
        + b'\r\n--x\r\nContent-Disposition: form-data; name="tag"\r\nContent-Type: text/plain; charset=no-such'
        b"\r\n\r\nscorpio\r\n--x--\r\n"
    )
    reply = client.post(f"{API}/upload", content=body, headers={"content-type": "multipart/form-data; boundary=x"})
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_multipart", reply.text
    assert stored_everything(client) == ([], [], 0)


@pytest.mark.parametrize("route", ["/fileids", "/jobs", "/comparisons"])
def test_paging_offsets_are_bounded(client, route):
    assert client.get(f"{API}{route}", params={"offset": 2**53 - 1}).json() == []
    for offset in (2**63, 2**53, -1, "x"):
        reply = client.get(f"{API}{route}", params={"offset": offset})
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_request", offset


@pytest.mark.parametrize(
    ("header", "status", "start", "end"),
    [
        ("bytes=0-99", 206, 0, 99),
        ("bytes=100-", 206, 100, None),
        ("bytes=-50", 206, -50, None),
        ("bytes=10-5", 200, 0, None),
        ("bytes=0-1,5-9", 200, 0, None),
        ("items=0-5", 200, 0, None),
        ("bytes=0-" + "9" * 4301, 206, 0, None),
        ("bytes=-" + "9" * 4301, 206, 0, None),
    ],
)
def test_download_byte_ranges(client, image, header, status, start, end):
    content = image.read_bytes()
    file_uuid = upload(client, image).json()["uuid"]
    reply = client.get(f"{API}/download/{file_uuid}", headers={"Range": header})
    assert reply.status_code == status
    expected = content[start:] if end is None else content[start : end + 1]
    assert reply.content == expected
    if status == 206:
        first = start % len(content)
        assert reply.headers["content-range"] == f"bytes {first}-{first + len(expected) - 1}/{len(content)}"


def test_unsatisfiable_range_and_stale_if_range(client, image):
    size = image.stat().st_size
    file_uuid = upload(client, image).json()["uuid"]
    reply = client.get(f"{API}/download/{file_uuid}", headers={"Range": f"bytes={size}-"})
    assert reply.status_code == 416 and reply.headers["content-range"] == f"bytes */{size}"
    assert reply.json()["error"] == "range_not_satisfiable"
    beyond = client.get(f"{API}/download/{file_uuid}", headers={"Range": f"bytes={'9' * 4301}-"})
    assert beyond.status_code == 416 and beyond.json()["error"] == "range_not_satisfiable"
    etag = client.get(f"{API}/download/{file_uuid}").headers["etag"]
    fresh = client.get(f"{API}/download/{file_uuid}", headers={"Range": "bytes=0-9", "If-Range": etag})
    stale = client.get(f"{API}/download/{file_uuid}", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert fresh.status_code == 206 and stale.status_code == 200 and len(stale.content) == size


def test_delete_removes_row_and_bytes(client, image):
    file_uuid = upload(client, image).json()["uuid"]
    reply = client.get(f"{API}/delete/{file_uuid}")
    assert reply.status_code == 200 and reply.json() == {"status": "File deleted and removed from DB"}
    assert stored_everything(client) == ([], [], 0)
    for path in (f"/delete/{file_uuid}", f"/download/{file_uuid}", f"/file/{file_uuid}"):
        gone = client.get(API + path)
        assert gone.status_code == 404 and gone.json()["error"] == "file_not_found"


def test_delete_is_refused_while_a_live_job_uses_the_file(client, image):
    file_uuid = upload(client, image).json()["uuid"]
    with client.appliance.db.session() as session:
        for state in ("SUCCESS", "RUNNING"):
            session.add(
                Job(
                    id=str(uuidlib.uuid4()),
                    user="anonymous",
                    app="aegean",
                    file_uuid=file_uuid,
                    data_inputs=file_uuid,
                    job_inputs={},
                    options={},
                    tag=None,
                    state=state,
                    status="",
                    submit_date=datetime.now(UTC),
                    cores=1,
                    walltime=60.0,
                    runner="local",
                )
            )
    reply = client.post(f"{API}/delete/{file_uuid}")
    assert reply.status_code == 409 and reply.json()["error"] == "file_in_use"
    assert f"{image.name} is used by 1 job(s) that have not ended: aegean submitted" in reply.json()["status"]
    assert "UTC (running)" in reply.json()["status"] and len(reply.json()["jobs"]) == 1
    assert client.get(f"{API}/download/{file_uuid}").status_code == 200


def _png(tmp_path):
    path = tmp_path / "photo.fits"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5000))
    return path


def _truncated(tmp_path):
    path = tmp_path / "cut.fits"
    path.write_bytes(write_image(tmp_path / "whole.fits").read_bytes()[:-3000])
    return path


def _cube(tmp_path):
    import numpy as np
    from astropy.io import fits

    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((4, 16, 16), dtype=np.float32)).writeto(path)
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    return path


def _wrong_extension(tmp_path):
    return write_image(tmp_path / "field.png")


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (_png, 415, "not_fits"),
        (_truncated, 422, "truncated_fits"),
        (_cube, 422, "not_2d_image"),
        (_empty, 400, "empty_file"),
        (_wrong_extension, 415, "unsupported_extension"),
    ],
)
def test_bad_files_get_a_clear_error_and_leave_nothing_behind(client, tmp_path, make, status, code):
    path = make(tmp_path)
    for reply in (upload(client, path), client.put(f"{API}/upload/{path.name}", content=path.read_bytes())):
        assert reply.status_code == status, reply.text
        assert reply.json()["error"] == code and reply.json()["status"]
        assert stored_everything(client) == ([], [], 0)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"files": {"tag": (None, "x")}}, 400, "missing_file"),
        ({"data": {"tag": "x"}}, 415, "unsupported_media_type"),
        ({"files": {"image": ("a.fits", b"SIMPLE  =")}}, 400, "invalid_upload"),
        (
            {
                "content": b'--xyz\r\nContent-Disposition: form-data; name="file"; filename=""\r\n\r\nSIMPLE  =\r\n'
                b"--xyz--\r\n",
                "headers": {"content-type": "multipart/form-data; boundary=xyz"},
            },
            400,
            "missing_filename",
        ),
        (
            {"content": b"SIMPLE  =", "headers": {"content-type": "application/octet-stream"}},
            415,
            "unsupported_media_type",
        ),
        (
            {
                "content": b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.fits"\r\n\r\nSIMPLE',
                "headers": {"content-type": "multipart/form-data; boundary=xyz"},
            },
            400,
            "invalid_multipart",
        ),
    ],
)
def test_malformed_upload_requests(client, kwargs, status, code):
    reply = client.post(f"{API}/upload", **kwargs)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == code
    assert stored_everything(client) == ([], [], 0)


def test_too_large_and_no_space_are_refused(tmp_path, image):
    small = make_settings(tmp_path / "small", upload_max_bytes=10_000)
    with api_client(small) as client:
        for reply in (upload(client, image), client.put(f"{API}/upload/x.fits", content=image.read_bytes())):
            assert reply.status_code == 413 and reply.json()["error"] == "too_large"
        # no Content-Length: the limit is enforced on the bytes as they arrive
        chunked = client.put(f"{API}/upload/x.fits", content=iter([image.read_bytes()[:8000]] * 3))
        assert chunked.status_code == 413
    assert not any(p.is_file() for p in (small.home / "data").rglob("*"))
    assert not any((small.home / "tmp" / "uploads").iterdir())

    full = make_settings(tmp_path / "full", disk_reserve_bytes=2**62)
    with api_client(full) as client:
        reply = upload(client, image)
        assert reply.status_code == 507 and reply.json()["error"] == "insufficient_storage"
        assert "free disk space" in reply.json()["status"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB file system of its own (tmpfs), to fill up."""
    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(home)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"a full disk is made with a tmpfs mount, which needs root: {mounted.stderr.decode().strip()}")
    try:
        yield home
    finally:
        subprocess.run(["umount", "--lazy", str(home)], check=True)


def fill(folder: Path) -> Path:
    """A file taking every byte left on folder's file system."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_is_refused_with_507_and_nothing_is_lost(small_disk, image):
    """0 bytes free (and no reserve to stop earlier): a job, an upload and a deletion are refused, or done whole."""
    with api_client(make_settings(small_disk, disk_reserve_bytes=0)) as client:
        file_uuid = upload(client, image).json()["uuid"]
        kept = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": file_uuid}).json()["job_id"]
        client.post(f"{API}/job/{kept}/cancel")
        wait_for_job(client, kept, timeout=30)
        jobs_dir = client.appliance.settings.jobs_dir
        folders = sorted(jobs_dir.rglob("job_*"))
        filler = fill(small_disk)

        health = client.get(f"{API}/health")
        assert health.status_code == 503 and health.json()["ok"] is False and health.json()["disk"] == "full"
        submitted = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": file_uuid})
        assert submitted.status_code == 507 and submitted.json()["error"] == "insufficient_storage"
        assert sorted(jobs_dir.rglob("job_*")) == folders
        assert upload(client, image).status_code == 507
        assert [f["fileid"] for f in client.get(f"{API}/fileids").json()] == [file_uuid]
        deleted = client.delete(f"{API}/job/{kept}")
        assert deleted.status_code in (200, 507), deleted.text
        if deleted.status_code == 507:  # refused whole: the job and its folder are still there
            assert deleted.json()["error"] == "insufficient_storage"
            assert client.get(f"{API}/job/{kept}/status").status_code == 200
            assert sorted(jobs_dir.rglob("job_*")) == folders

        filler.unlink()
        assert client.get(f"{API}/health").json()["ok"] is True
        assert client.delete(f"{API}/job/{kept}").status_code in (200, 404)
        assert client.get(f"{API}/job/{kept}/status").status_code == 404 and not any(jobs_dir.rglob("job_*"))
        again = client.post(f"{API}/job", json={"app": "aegean", "data_inputs": file_uuid})
        assert again.status_code == 202
        client.post(f"{API}/job/{again.json()['job_id']}/cancel")


def _zeros_gz(shape: tuple[int, int], after: int = 0) -> bytes:
    """A gzipped float32 image of zeros, and ``after`` zero bytes after its last HDU."""
    plain = io.BytesIO()
    fits.PrimaryHDU(np.zeros(shape, dtype=np.float32)).writeto(plain)
    return gzip.compress(plain.getvalue() + bytes(after), 1)


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda: _zeros_gz((4096, 4096)), "to 67112640 bytes"),  # header and data, known from the header; 65 KB gzip
        (lambda: _zeros_gz((64, 64), after=32 << 20), "bytes"),  # found while the stream is read
    ],
    ids=["image", "bytes_after_the_image"],
)
def test_gzip_decompressing_beyond_the_limit_is_refused_and_leaves_nothing(tmp_path, make, size):
    content = make()
    limited = make_settings(tmp_path / "limited", decompressed_max_bytes=16 << 20)
    with api_client(limited) as client:
        for reply in (
            client.post(f"{API}/upload", files={"file": ("zeros.fits.gz", content)}),
            client.put(f"{API}/upload/zeros.fits.gz", content=content),
        ):
            assert reply.status_code == 413, reply.text
            assert reply.json()["error"] == "too_large"
            message = reply.json()["status"]
            assert f"{size} or more" in message and "over the limit of 16777216 bytes" in message
            assert "decompressed_max_bytes" in message
            assert stored_everything(client) == ([], [], 0)


def _raw_fits(*headers: list[bytes]) -> bytes:
    """HDUs of 16x16 float32 zeros with these cards after the mandatory ones, written card by card (astropy takes
    seconds to build a header of 100 000 cards)."""
    hdus = []
    for index, cards in enumerate(headers):
        first = [b"SIMPLE  =                    T"] if index == 0 else [b"XTENSION= 'IMAGE   '"]
        axes = [b"BITPIX  =                  -32", b"NAXIS   =                    2", b"NAXIS1  =                   16",
                b"NAXIS2  =                   16"]  # fmt: skip
        extension = [b"PCOUNT  =                    0", b"GCOUNT  =                    1"] if index else []
        header = b"".join(card.ljust(80) for card in [*first, *axes, *extension, *cards, b"END"])
        hdus.append(header.ljust(-(-len(header) // 2880) * 2880) + bytes(2880))
    return b"".join(hdus)


HUGE_HISTORY = [b"HISTORY step %d" % i for i in range(131_000)]  # a 10 MB header


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("history.fits", lambda: _raw_fits(HUGE_HISTORY)),
        ("history.fits.gz", lambda: gzip.compress(_raw_fits(HUGE_HISTORY), 1)),
        ("history.fits", lambda: _raw_fits([], HUGE_HISTORY)),
    ],
    ids=["plain", "gzip", "in_an_extension"],
)
def test_huge_headers_are_refused_before_they_are_parsed(client, name, make):
    content = make()
    for reply in (
        client.post(f"{API}/upload", files={"file": (name, content)}),
        client.put(f"{API}/upload/{name}", content=content),
    ):
        assert reply.status_code == 413, reply.text
        assert reply.json() == {
            "status": "the FITS headers hold more than 10000 cards, the limit set by header_max_cards",
            "error": "header_too_large",
        }
        assert stored_everything(client) == ([], [], 0)


def test_unknown_and_malformed_ids_are_404(client):
    for file_uuid in (uuidlib.uuid4().hex, "../../etc/passwd", "x" * 32):
        for path in ("/file/", "/download/", "/delete/"):
            reply = client.get(API + path + file_uuid)
            assert reply.status_code == 404, (path, file_uuid)
            assert reply.json()["error"] in ("file_not_found", "not_found")


def test_http_level_errors_are_json(client):
    bad_param = client.get(f"{API}/fileids", params={"limit": "many"})
    assert bad_param.status_code == 400 and bad_param.json()["error"] == "invalid_request"
    assert client.get(f"{API}/fileids", params={"limit": 0}).status_code == 400
    assert client.get(f"{API}/nothing-here").json() == {"status": "Not Found", "error": "not_found"}
    wrong_method = client.delete(f"{API}/fileids")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


def test_foreign_host_headers_are_refused(client):
    assert client.get(f"{API}/health", headers={"Host": "localhost:8765"}).status_code == 200
    assert client.get(f"{API}/health", headers={"Host": "[::1]:8765"}).status_code == 200
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
        reply = client.get(f"{API}/health", headers={"Host": host})
        assert reply.status_code == 400 and reply.json()["error"] == "host_not_allowed"


def test_health_reports_database_queue_and_disk(client):
    reply = client.get(f"{API}/health")
    body = reply.json()
    assert reply.status_code == 200 and body["ok"] is True
    assert body["database"] == "ok" and body["queue"] == "running" and body["disk_free_bytes"] > 0


def test_openapi_docs_are_served_from_vendored_files(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "http://" not in html.replace("http://127.0.0.1", "") and "https://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js", "favicon-32x32.png"):
        assert client.get(f"/static/vendor/swagger-ui/{asset}").status_code == 200
    spec = client.get("/docs/openapi.json").json()
    for path in (
        "/upload",
        "/upload/{filename}",
        "/fileids",
        "/file/{file_uuid}",
        "/download/{file_uuid}",
        "/delete/{file_uuid}",
        "/health",
    ):
        assert API + path in spec["paths"], path
