"""Login: the API token for scripts, the per-start login key traded for a session cookie, and requests from other
origins refused."""

from __future__ import annotations

import os
import stat

from appliance.core import Appliance
from tests.conftest import API, api_client, make_settings, upload_file, wait_for_job
from web.auth import SESSION_ENDED

HTML = {"Accept": "text/html"}


def anonymous(client) -> None:
    client.headers.pop("Authorization", None)
    client.cookies.clear()


def test_api_needs_the_token(client, image):
    token = client.headers["Authorization"].removeprefix("Bearer ")
    file_uuid = upload_file(client, image)
    anonymous(client)
    for headers in ({}, {"Authorization": "Bearer caesar_wrong"}, {"Authorization": "Basic eDp5"}):
        reply = client.get(f"{API}/fileids", headers=headers)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"] == "unauthorized" and reply.headers["www-authenticate"] == "Bearer"
        assert "caesar-appliance token" in reply.json()["status"]
    # nothing is changed by a refused request
    assert client.get(f"{API}/delete/{file_uuid}").status_code == 401
    assert client.get(f"{API}/file/{file_uuid}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # caesar-rest also took the token as a query parameter
    assert client.get(f"{API}/fileids", params={"access_token": token}).json()[0]["fileid"] == file_uuid
    # public: health (for monitors), the API description and the static files
    assert client.get(f"{API}/health").json()["ok"] is True
    assert client.get("/docs/openapi.json").json()["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert client.get("/static/css/app.css").status_code == 200


def test_login_key_gives_a_session_for_pages_and_api(client):
    appliance: Appliance = client.appliance
    anonymous(client)
    # a browser without a session is sent to the login page, which remembers where it was going
    reply = client.get("/files?tag=a b", headers=HTML, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"] == "/login?next=%2Ffiles%3Ftag%3Da%2520b"
    fragment = client.get(
        "/files/table", headers={**HTML, "HX-Request": "true", "HX-Current-URL": "http://127.0.0.1:8765/files"}
    )
    assert fragment.status_code == 401 and fragment.headers["hx-redirect"] == "/login?next=%2Ffiles"
    assert "Log in" in client.get("/login", headers=HTML).text
    assert client.get("/events/overview").status_code == 401  # the live stream too

    wrong = client.get("/login", params={"key": "guess", "next": "/files"}, headers=HTML, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers

    key = appliance.access.new_login_key()
    good = client.get("/login", params={"key": key, "next": "/files"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/files"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/files", headers=HTML).status_code == 200
    assert client.get(f"{API}/fileids").status_code == 200  # the page's own uploads use the API
    # a login key logs in once
    again = client.get("/login", params={"key": key}, headers=HTML, follow_redirects=False)
    assert again.status_code == 401 and "used already" in again.text
    # the login form posts the key (never in an address); the API token works there too, for lab browsers
    form = client.post("/login", data={"key": appliance.access.new_login_key(), "next": "/jobs"},
                       headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False)  # fmt: skip
    assert form.status_code == 303 and form.headers["location"] == "/jobs"
    token = client.post("/login", data={"key": appliance.access.api_token}, follow_redirects=False,
                        headers={"Origin": "http://127.0.0.1:8765"})  # fmt: skip
    assert token.status_code == 303

    # only paths of this server are followed after login
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        key = appliance.access.new_login_key()
        reply = client.get("/login", params={"key": key, "next": target}, follow_redirects=False)
        assert reply.headers["location"] == "/"

    assert (
        client.post("/logout", headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False).status_code == 303
    )
    assert client.get(f"{API}/fileids").status_code == 401


def test_a_session_cannot_be_used_from_another_origin(client, image):
    file_uuid = upload_file(client, image)
    anonymous(client)
    client.get("/login", params={"key": client.appliance.access.new_login_key()})
    foreign = {"Origin": "http://127.0.0.1:9999"}  # another local server: same site, other origin
    assert client.post(f"/files/{file_uuid}/delete", headers=foreign).status_code == 403
    assert (
        client.post(f"{API}/upload", files={"file": ("x.fits", image.read_bytes())}, headers=foreign).status_code == 403
    )
    assert client.post(f"/files/{file_uuid}/delete", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    # caesar-rest deletes and cancels with GET: carried by the cookie alone, they need the same proof
    job_id = client.appliance.jobs.submit("anonymous", "sep", {}, file_uuid).id
    for headers in (foreign, {"Sec-Fetch-Site": "same-site"}, {}):
        assert client.get(f"{API}/delete/{file_uuid}", headers=headers).status_code == 403
        assert client.get(f"{API}/job/{job_id}/cancel", headers=headers).status_code == 403
    assert client.get(f"{API}/file/{file_uuid}").status_code == 200  # still there
    assert client.get(f"{API}/job/{job_id}/status", headers=foreign).status_code == 200  # reading is not acting
    # scripts keep caesar-rest's GET forms: the token is proof enough, wherever the request comes from
    bearer = {**foreign, "Authorization": f"Bearer {client.appliance.access.api_token}"}
    assert client.get(f"{API}/job/{job_id}/cancel", headers=bearer).status_code == 200
    wait_for_job(client, job_id, timeout=30)
    own = client.post(f"/files/{file_uuid}/delete", headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert own.status_code == 303
    assert client.get(f"{API}/file/{file_uuid}").status_code == 404


def test_token_kept_across_starts_login_key_not(tmp_path):
    settings = make_settings(tmp_path / "home")
    with api_client(settings) as first:
        token, key = first.appliance.access.api_token, first.appliance.access.new_login_key()
        anonymous(first)
        session = first.get("/login", params={"key": first.appliance.access.new_login_key()}, follow_redirects=False)
        assert first.get("/files", headers=HTML).status_code == 200
    with api_client(settings) as second:
        assert second.appliance.access.api_token == token
        anonymous(second)
        assert second.get("/login", params={"key": key}, follow_redirects=False).status_code == 401
        # the browser's session ended with the first run: the login page says so, and where it was going
        second.cookies = session.cookies
        ended = second.get("/files", headers=HTML, follow_redirects=False)
        assert ended.status_code == 303 and ended.headers["location"] == "/login?next=%2Ffiles&ended=1"
        assert SESSION_ENDED in second.get(ended.headers["location"], headers=HTML).text
        second.cookies = {}
        assert "session has ended" not in second.get("/login?next=%2Ffiles", headers=HTML).text
    for secret in (settings.token_path, settings.lock_path):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_login_can_be_turned_off(tmp_path):
    with api_client(make_settings(tmp_path / "home", require_login=False)) as client:
        anonymous(client)
        assert client.get(f"{API}/fileids").status_code == 200
        assert client.get("/files", headers=HTML).status_code == 200


def test_home_is_readable_by_its_owner_only(tmp_path, image):
    """A lab machine has other users: the home folder is 0700 and nothing in it is open to group or others, also
    what an earlier version left open."""
    home = tmp_path / "home"
    (home / "data" / "anonymous").mkdir(parents=True)
    home.chmod(0o755)
    (home / "data").chmod(0o755)
    old = home / "data" / "anonymous" / "old.txt"
    old.write_text("written with umask 022")
    old.chmod(0o644)
    previous = os.umask(0o022)
    try:
        with api_client(make_settings(home)) as client:
            file_uuid = upload_file(client, image)
            job = client.post(f"{API}/job", json={"app": "sep", "job_inputs": {}, "data_inputs": file_uuid}).json()
            assert wait_for_job(client, job["job_id"], timeout=120)["state"] == "SUCCESS"
        assert os.umask(0o022) == 0o022  # the process's own umask is given back at stop
    finally:
        os.umask(previous)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    open_to_others = [
        f"{path.relative_to(home)} {stat.S_IMODE(path.lstat().st_mode):o}"
        for path in home.rglob("*")
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]
    assert open_to_others == []
    kinds = {path.relative_to(home).parts[0] for path in home.rglob("*")}
    assert {"appliance.db", "queue.db", "logs", "data", "jobs", "api-token"} <= kinds
