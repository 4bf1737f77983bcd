"""Idempotency-Key: a retry of an upload, a job or a comparison with the same key gets the first answer, not a
duplicate; a refusal is not kept; keys last 24 hours and a restart frees the claims a crash left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from appliance.models import IdempotencyKey, StoredFile
from tests.conftest import API, upload_file


def job_body(file_uuid: str, **options: object) -> dict:
    return {"app": "aegean", "data_inputs": file_uuid, "job_inputs": options}


def stored_files(client) -> int:
    with client.appliance.db.session() as session:
        return session.scalar(select(func.count()).select_from(StoredFile))


def test_a_job_sent_again_with_its_key_is_not_run_twice(client, image):
    file_uuid = upload_file(client, image)
    key = {"Idempotency-Key": "job-7f3a"}
    first = client.post(f"{API}/job", json=job_body(file_uuid), headers=key)
    again = client.post(f"{API}/job", json=job_body(file_uuid), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert [job["job_id"] for job in client.get(f"{API}/jobs").json()] == [first.json()["job_id"]]

    other = client.post(f"{API}/job", json=job_body(file_uuid, seedclip=4), headers=key)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    elsewhere = client.put(f"{API}/upload/x.fits", content=image.read_bytes(), headers=key)
    assert elsewhere.status_code == 422 and elsewhere.json()["error"] == "idempotency_key_reused"
    assert len(client.get(f"{API}/jobs").json()) == 1 and stored_files(client) == 1
    client.post(f"{API}/job/{first.json()['job_id']}/cancel")


def test_uploads_sent_again_with_their_key_are_stored_once(client, image):
    content = image.read_bytes()
    # the client draws a new multipart boundary for each attempt: still the same request
    multipart = [
        client.post(
            f"{API}/upload", files={"file": ("a.fits", content)}, data={"tag": "t"}, headers={"Idempotency-Key": "m1"}
        )
        for _ in range(2)
    ]
    raw = [
        client.put(f"{API}/upload/b.fits", content=content, params={"tag": "t"}, headers={"Idempotency-Key": "r1"})
        for _ in range(2)
    ]
    for first, again in (multipart, raw):
        assert first.status_code == again.status_code == 200 and first.json() == again.json()
        assert again.headers["idempotent-replayed"] == "true"
    assert stored_files(client) == 2
    changed = client.put(
        f"{API}/upload/b.fits", content=content, params={"tag": "u"}, headers={"Idempotency-Key": "r1"}
    )
    assert changed.status_code == 422 and stored_files(client) == 2


def test_a_refusal_is_not_kept_and_the_fixed_request_runs(client, image):
    file_uuid = upload_file(client, image)
    key = {"Idempotency-Key": "k"}
    refused = client.post(f"{API}/job", json=job_body(file_uuid, seedclip="high"), headers=key)
    assert refused.status_code == 422 and refused.json()["error"] == "invalid_options"
    fixed = client.post(f"{API}/job", json=job_body(file_uuid), headers=key)
    assert fixed.status_code == 202 and "idempotent-replayed" not in fixed.headers
    client.post(f"{API}/job/{fixed.json()['job_id']}/cancel")


def test_a_key_whose_request_still_runs_is_refused_until_a_restart_frees_it(client, image):
    keys = client.appliance.idempotency_keys
    assert keys.claim(client.appliance.settings.user, "busy", f"POST {API}/compare") is None
    busy = client.post(f"{API}/compare", json={"jobs": ["a", "b"]}, headers={"Idempotency-Key": "busy"})
    assert busy.status_code == 409 and busy.json()["error"] == "idempotency_key_in_progress"
    assert keys.recover() == 1
    assert (
        client.post(f"{API}/compare", json={"jobs": ["a", "b"]}, headers={"Idempotency-Key": "busy"}).status_code == 404
    )


def test_keys_last_24_hours_and_must_be_printable_ascii(client, image):
    file_uuid = upload_file(client, image)
    key = {"Idempotency-Key": "day"}
    first = client.post(f"{API}/job", json=job_body(file_uuid), headers=key).json()["job_id"]
    with client.appliance.db.session() as session:
        session.execute(update(IdempotencyKey).values(created=datetime.now(UTC) - timedelta(hours=24, seconds=1)))
    later = client.post(f"{API}/job", json=job_body(file_uuid), headers=key)
    assert later.status_code == 202 and later.json()["job_id"] != first
    for bad in ("", "k" * 256, "cl\xe9".encode("latin-1"), b"a\x01b"):
        reply = client.post(f"{API}/job", json=job_body(file_uuid), headers={"Idempotency-Key": bad})
        assert reply.status_code == 400 and reply.json()["error"] == "invalid_idempotency_key", bad
    for job in client.get(f"{API}/jobs").json():
        client.post(f"{API}/job/{job['job_id']}/cancel")
