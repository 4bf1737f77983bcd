"""The JSON log under <home>/logs/: one object per line, with the action fields, rotated by size."""

from __future__ import annotations

import json
import logging
import stat

import httpx

from appliance import logs
from appliance.testing import ServerProcess
from tests.conftest import api_client, make_settings


def test_json_lines_with_actions_and_rotation(tmp_path, image):
    settings = make_settings(tmp_path / "home", log_max_bytes=1500, log_backups=2)
    with api_client(settings) as client:
        for _ in range(12):
            reply = client.post("/caesar/api/v1.0/upload", files={"file": ("f.fits", image.read_bytes())})
            assert reply.status_code == 200
        client.get("/caesar/api/v1.0/download/" + "0" * 32)
    logs = sorted(settings.logs_dir.iterdir())
    assert [p.name for p in logs] == ["appliance.log", "appliance.log.1", "appliance.log.2"]
    entries = [json.loads(line) for p in logs for line in p.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    uploads = [e for e in entries if e.get("action") == "upload"]
    assert uploads and all(e["user"] == "anonymous" and len(e["file"]) == 32 for e in uploads)
    refused = [e for e in entries if e.get("action") == "refuse"]
    assert refused and refused[-1]["error"] == "file_not_found" and refused[-1]["http_status"] == 404
    assert all(p.stat().st_size <= 1500 + 1000 for p in logs)


def test_no_secret_reaches_a_log(tmp_path, image):
    """Log in by the launcher's link, by the form and with caesar-rest's ?access_token=, at debug level (every
    request logged): neither the token, nor a login key, nor a session id is in any log file or on stderr."""
    home = tmp_path / "home"
    with ServerProcess(home, env={"CAESAR_APPLIANCE_LOG_LEVEL": "DEBUG"}) as app:
        secrets = [app.token]
        with httpx.Client(base_url=app.url, timeout=30) as browser:
            link = app.login_url
            secrets.append(link.split("key=", 1)[1])
            assert browser.get(link, follow_redirects=False).status_code == 303
            secrets.append(next(iter(browser.cookies.values())))
            assert browser.get(link, follow_redirects=False).status_code == 401  # used once
            form_key = app.login_url.split("key=", 1)[1]
            secrets.append(form_key)
            origin = {"Origin": app.url}
            assert browser.post("/login", data={"key": form_key}, headers=origin).status_code == 303
            secrets.append(next(iter(browser.cookies.values())))
            assert browser.get("/files", headers={"Accept": "text/html"}).status_code == 200
            wrong = "caesar_" + "w" * 40
            with httpx.Client(base_url=app.api, timeout=30) as script:
                assert script.get("/fileids", params={"access_token": app.token}).status_code == 200
                assert script.get("/fileids", params={"access_token": wrong}).status_code == 401
                upload = script.post("/upload", params={"access_token": app.token},
                                     files={"file": ("a.fits", image.read_bytes())})  # fmt: skip
                assert upload.status_code == 200
        assert app.stop() == 0
        written = "\n".join(path.read_text() for path in (home / "logs").iterdir()) + app.errors()
    assert "access_token=[redacted]" in written and "/login?key=[redacted]" in written  # the lines are there
    for secret in [*secrets, wrong]:
        assert secret not in written
    assert stat.S_IMODE((home / "logs").stat().st_mode) == 0o700


def test_a_log_that_cannot_be_written_goes_to_stderr(tmp_path, capsys):
    handler = logs.file_handler(tmp_path / "logs", "INFO", 1 << 20, 1)
    handler.stream = open("/dev/full", "w")  # every write fails with ENOSPC, as on a full disk
    record = logging.LogRecord("appliance.jobs", logging.ERROR, __file__, 1, "job %s failed", ("j1",), None)
    handler.handle(record)
    handler.handle(record)
    err = capsys.readouterr().err.splitlines()
    assert "cannot write the log" in err[0] and "No space left on device" in err[0]
    assert [json.loads(line)["message"] for line in err[1:]] == ["job j1 failed", "job j1 failed"]
    handler.stream = open(handler.baseFilename, "a")
    handler.handle(record)
    assert "can be written again" in capsys.readouterr().err
    handler.close()
