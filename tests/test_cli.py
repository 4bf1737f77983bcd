"""The real `caesar-appliance serve` process: start, serve, refuse to double-start, exit cleanly, survive SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from appliance.lock import HomeLock
from appliance.testing import ServerProcess
from tests.conftest import write_image

pytestmark = pytest.mark.e2e  # the real appliance process


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=timeout)


def round_trip(server: ServerProcess, images: list[Path]) -> None:
    """Upload every image (alternating multipart and raw body), download each byte-identical, delete them all."""
    with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as http:
        uuids = []
        for n, path in enumerate(images):
            if n % 2:
                reply = http.put(f"/upload/{path.name}", content=path.read_bytes(), params={"tag": "e2e"})
            else:
                reply = http.post("/upload", files={"file": (path.name, path.read_bytes())}, data={"tag": "e2e"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            uuids.append(reply.json()["uuid"])
        listed = http.get("/fileids", params={"tag": "e2e"}).json()
        assert sorted(f["fileid"] for f in listed) == sorted(uuids)
        for file_uuid, path in zip(uuids, images, strict=True):
            download = http.get(f"/download/{file_uuid}")
            assert download.status_code == 200 and download.content == path.read_bytes()
            assert path.name in download.headers["content-disposition"]
        for file_uuid in uuids:
            assert http.get(f"/delete/{file_uuid}").status_code == 200
        assert http.get("/fileids").json() == []
    assert not [p for p in (server.home / "data").rglob("*") if p.is_file()]


def assert_clean_exit(server: ServerProcess, signum: int) -> None:
    assert server.stop(signum) == 0, server.errors()
    HomeLock(server.home / "appliance.lock").acquire()  # released
    lines = (server.home / "logs" / "appliance.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert any(e["message"] == "appliance stopped" for e in entries)
    assert any(e.get("action") == "upload" for e in entries)


def test_serve_round_trip_with_synthetic_images(tmp_path):
    images = [write_image(tmp_path / "a.fits"), write_image(tmp_path / "b.fits", shape=(1, 1, 48, 40))]
    with ServerProcess(tmp_path / "home") as server:
        assert server.url.startswith("http://127.0.0.1:")
        round_trip(server, images)
        assert_clean_exit(server, signal.SIGTERM)


def test_serve_round_trip_with_the_real_atca_images(tmp_path, shared_data):
    images = [shared_data / "ScorpioExtendedSourceField.fits", shared_data / "ScorpioS17Field.fits"]
    with ServerProcess(tmp_path / "home") as server:
        round_trip(server, images)
        assert_clean_exit(server, signal.SIGINT)


def test_second_instance_on_the_same_home_exits_3_and_names_the_first(tmp_path):
    with ServerProcess(tmp_path / "home") as server:
        second = run_cli("serve", "--home", str(tmp_path / "home"), "--port", "0")
        assert second.returncode == 3
        assert "already running" in second.stderr and server.url in second.stderr
        with urllib.request.urlopen(server.api + "/health") as reply:
            assert json.load(reply)["ok"]


def test_token_finds_the_running_appliance_whatever_its_home(tmp_path):
    """Scripts run `caesar-appliance token` without --home: they get the token of the appliance that is running,
    not a new token made in the default home; with several running they are told to choose; a 401 names the home."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg-data")}  # the default home, kept inside the test

    def token(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance", "token", *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, **env})  # fmt: skip

    with ServerProcess(tmp_path / "lab", env=env) as lab:
        found = token()
        assert found.returncode == 0 and found.stdout.strip() == lab.token and found.stderr == ""
        wrong = httpx.get(lab.api + "/fileids", headers={"Authorization": "Bearer caesar_" + "x" * 40})
        assert wrong.status_code == 401 and f"token --home {lab.home}" in wrong.json()["status"]
        with ServerProcess(tmp_path / "other", env=env) as other:
            several = token()
            assert several.returncode == 2 and str(lab.home) in several.stderr and other.url in several.stderr
            assert token("--home", str(other.home)).stdout.strip() == other.token
    alone = token()
    assert alone.returncode == 0 and "no appliance is running" in alone.stderr and "made one" in alone.stderr
    assert alone.stdout.strip() not in (lab.token, other.token)
    assert (tmp_path / "xdg-data" / "caesar-appliance" / "api-token").read_text().strip() == alone.stdout.strip()


def test_busy_port_exits_4_with_nothing_started(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--home", str(tmp_path / "home"), "--port", str(port))
    assert result.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Address already in use" in result.stderr
    assert not (tmp_path / "home" / "appliance.db").exists() and not (tmp_path / "home" / "queue.db").exists()
    HomeLock(tmp_path / "home" / "appliance.lock").acquire()


def test_bad_settings_exit_2(tmp_path):
    result = run_cli("serve", "--home", str(tmp_path), "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = 3\n")
    result = run_cli("serve", "--config", str(bad))
    assert result.returncode == 2 and "unknown setting 'workers'" in result.stderr


def test_failed_startup_exits_1_and_points_at_the_log(tmp_path):
    home = tmp_path / "home"
    (home / "appliance.db").mkdir(parents=True)  # the database cannot be opened
    result = run_cli("serve", "--home", str(home), "--port", "0")
    assert result.returncode == 1
    assert "startup failed" in result.stderr and str(home / "logs" / "appliance.log") in result.stderr
    HomeLock(home / "appliance.lock").acquire()


def test_sigkill_in_the_middle_of_a_large_upload(tmp_path, image):
    """Nothing registered, no temp file left, and the server healthy after the restart."""
    home = tmp_path / "home"
    declared = 512 * 2**20
    uploads = home / "tmp" / "uploads"
    with ServerProcess(home) as first:
        host, port = first.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                f"PUT /caesar/api/v1.0/upload/big.fits HTTP/1.1\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
                f"Authorization: Bearer {first.token}\r\n\r\n".encode()
            )
            conn.sendall(image.read_bytes()[:2880])
            block = bytes(4 << 20)
            for _ in range(16):
                conn.sendall(block)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(p.stat().st_size > 0 for p in uploads.glob("*.part")):
                time.sleep(0.05)
            partial = list(uploads.glob("*.part"))
            assert partial and partial[0].stat().st_size > 0, (
                "the upload was not in progress when the process was killed"
            )
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)

    with ServerProcess(home) as second:
        assert not list(uploads.iterdir())
        assert not [p for p in (home / "data").rglob("*") if p.is_file()]
        assert httpx.get(second.api + "/fileids", headers=second.headers).json() == []
        health = httpx.get(second.api + "/health").json()
        assert health["ok"] and health["database"] == "ok" and health["queue"] == "running"
        assert second.stop() == 0


def test_sigkill_mid_job_then_restart_ends_the_job_with_no_orphan(tmp_path, slow_sky):
    from tests.conftest import LONG_JOB, group_members

    home = tmp_path / "home"
    with ServerProcess(home) as first:
        with httpx.Client(base_url=first.api, headers=first.headers, timeout=60) as http:
            file_uuid = http.post("/upload", files={"file": ("slow.fits", slow_sky.read_bytes())}).json()["uuid"]
            job_id = http.post("/job", json={"app": "aegean", "job_inputs": LONG_JOB, "data_inputs": file_uuid}).json()[
                "job_id"
            ]
            deadline = time.monotonic() + 60
            while (status := http.get(f"/job/{job_id}/status").json())["state"] != "RUNNING" or not status["pid"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finder = int(status["pid"])
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert group_members(finder, timeout=0), "the finder should outlive the killed appliance"

    with ServerProcess(home) as second:
        assert group_members(finder) == []  # the orphan was killed at start
        with httpx.Client(base_url=second.api, headers=second.headers, timeout=60) as http:
            log = http.get(f"/job/{job_id}/log").text
            assert "killed the job's processes left running by the stopped appliance" in log
            deadline = time.monotonic() + 60
            while (status := http.get(f"/job/{job_id}/status").json())["state"] != "RUNNING" or not status["pid"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status["pid"] != str(finder)
            assert http.post(f"/job/{job_id}/cancel").json()["state"] == "CANCELING"
            deadline = time.monotonic() + 30
            while http.get(f"/job/{job_id}/status").json()["state"] != "CANCELED":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert group_members(int(status["pid"])) == []
            assert http.get(f"/job/{job_id}/output").status_code == 200
        assert second.stop() == 0


def test_open_live_pages_do_not_hold_up_shutdown(tmp_path):
    import threading

    received: list[str] = []
    with ServerProcess(tmp_path / "home") as server:

        def listen() -> None:
            try:
                with httpx.stream("GET", server.url + "/events/overview", headers=server.headers, timeout=60) as stream:
                    for chunk in stream.iter_text():
                        received.append(chunk)
            except httpx.HTTPError:
                pass

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        deadline = time.monotonic() + 20
        while not any("event: queue" in chunk for chunk in received):
            assert time.monotonic() < deadline, "no live update arrived"
            time.sleep(0.05)
        started = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 10
        listener.join(5)
