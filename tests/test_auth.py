"""Login: the API token for scripts, the per-start login key traded for a session cookie, and requests from other
origins refused."""

from __future__ import annotations

import stat

from appliance.core import Appliance
from tests.conftest import API, api_client, make_settings, upload_file

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

    good = client.get("/login", params={"key": appliance.access.login_key, "next": "/files"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/files"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/files", headers=HTML).status_code == 200
    assert client.get(f"{API}/fileids").status_code == 200  # the page's own uploads use the API

    # only paths of this server are followed after login
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        reply = client.get("/login", params={"key": appliance.access.login_key, "next": target}, follow_redirects=False)
        assert reply.headers["location"] == "/"

    assert (
        client.post("/logout", headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False).status_code == 303
    )
    assert client.get(f"{API}/fileids").status_code == 401


def test_a_session_cannot_be_used_from_another_origin(client, image):
    file_uuid = upload_file(client, image)
    anonymous(client)
    client.get("/login", params={"key": client.appliance.access.login_key})
    foreign = {"Origin": "http://127.0.0.1:9999"}  # another local server: same site, other origin
    assert client.post(f"/files/{file_uuid}/delete", headers=foreign).status_code == 403
    assert (
        client.post(f"{API}/upload", files={"file": ("x.fits", image.read_bytes())}, headers=foreign).status_code == 403
    )
    assert client.post(f"/files/{file_uuid}/delete", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.get(f"{API}/file/{file_uuid}").status_code == 200  # still there
    own = client.post(f"/files/{file_uuid}/delete", headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False)
    assert own.status_code == 303
    assert client.get(f"{API}/file/{file_uuid}").status_code == 404


def test_token_kept_across_starts_login_key_not(tmp_path):
    settings = make_settings(tmp_path / "home")
    with api_client(settings) as first:
        token, key = first.appliance.access.api_token, first.appliance.access.login_key
    with api_client(settings) as second:
        assert second.appliance.access.api_token == token
        assert second.appliance.access.login_key != key
        anonymous(second)
        assert second.get("/login", params={"key": key}, follow_redirects=False).status_code == 401
    for secret in (settings.token_path, settings.lock_path):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret


def test_login_can_be_turned_off(tmp_path):
    with api_client(make_settings(tmp_path / "home", require_login=False)) as client:
        anonymous(client)
        assert client.get(f"{API}/fileids").status_code == 200
        assert client.get("/files", headers=HTML).status_code == 200
