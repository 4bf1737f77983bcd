"""The JSON log under <home>/logs/: one object per line, with the action fields, rotated by size."""

from __future__ import annotations

import json

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
