"""The caesar-rest file API in-process: upload, list, inspect, download, delete, and every refusal."""

from __future__ import annotations

import gzip
import hashlib
import io
import uuid as uuidlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from appliance.models import Job, StoredFile
from tests.conftest import api_client, make_settings, write_image

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


@pytest.mark.parametrize(
    ("header", "status", "start", "end"),
    [
        ("bytes=0-99", 206, 0, 99),
        ("bytes=100-", 206, 100, None),
        ("bytes=-50", 206, -50, None),
        ("bytes=10-5", 200, 0, None),
        ("bytes=0-1,5-9", 200, 0, None),
        ("items=0-5", 200, 0, None),
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
    assert "pending or running job" in reply.json()["status"]
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
