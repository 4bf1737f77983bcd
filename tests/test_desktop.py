"""The desktop launcher (``caesar-appliance`` alone) as a real process: the browser opened on the login link, a
second launch opening the running dashboard, the tray icon docked in a real tray (Xvfb + trayer) following the
jobs, and clean stops with running jobs re-queued. The tray menu's actions are called as plain functions."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from appliance.core import Appliance
from appliance.testing import ServerProcess
from appliance.tray import COLOURS, Tray, icon_image
from tests.conftest import API, LONG_JOB, group_members, make_settings, upload_file, wait_for_job
from tests.test_jobs import running_pid, submit

LAUNCHER = [sys.executable, "-m", "appliance"]


def recorder(folder: Path, name: str) -> tuple[Path, Path]:
    """A small program that appends its arguments to a file: what the launcher runs as the browser (BROWSER) or
    the folder opener (xdg-open)."""
    script, record = folder / name, folder / f"{name}.calls"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{record}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def calls(record: Path, count: int = 1, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = record.read_text().splitlines() if record.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{record.name} called fewer than {count} times")


def leftovers(home: Path) -> list[str]:
    """Processes still running for this home folder: the appliance itself or any job it started."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if str(home) in " ".join(info["cmdline"] or []) or str(home) in (info["cwd"] or ""):
            found.append(f"{info['pid']} {' '.join(info['cmdline'] or [])}")
    return found


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """A virtual X display on a free number: the process and the display's name."""
    for program in ("Xvfb", "trayer", "xwininfo"):
        if not shutil.which(program):
            pytest.fail(
                f"{program} is needed for the tray tests: ./manage test installs it (apt xvfb trayer x11-utils)"
            )
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    return xvfb, ":" + (xvfb.stdout.readline().strip() if xvfb.stdout else "")


def start_trayer(display: str) -> subprocess.Popen:
    return subprocess.Popen(["trayer", "--edge", "top", "--widthtype", "request"],
                            env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def stop(*processes: subprocess.Popen | None) -> None:
    for process in processes:
        if process is not None:
            process.terminate()
            process.wait(10)


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A virtual X display with a system tray (trayer) on it."""
    xvfb, name = start_xvfb()
    tray = start_trayer(name)
    try:
        deadline = time.monotonic() + 10
        while not tray_host_ready(name):
            assert time.monotonic() < deadline and tray.poll() is None, "trayer did not start"
            time.sleep(0.1)
        yield name
    finally:
        stop(tray, xvfb)


def tray_host_ready(display: str) -> bool:
    """Whether a tray host owns the system tray selection of the display's screen."""
    from Xlib import display as xdisplay

    connection = xdisplay.Display(display)
    try:
        atom = connection.intern_atom(f"_NET_SYSTEM_TRAY_S{connection.get_default_screen()}")
        return connection.get_selection_owner(atom) != 0
    finally:
        connection.close()


def windows(display: str) -> str:
    return subprocess.run(["xwininfo", "-root", "-tree"], env={**os.environ, "DISPLAY": display},
                          capture_output=True, text=True).stdout  # fmt: skip


def docked_title(display: str) -> str | None:
    """The name of our icon's window inside trayer's panel, or None when it is not docked."""
    lines = windows(display).splitlines()
    for n, line in enumerate(lines):
        if '"panel"' in line:
            depth = len(line) - len(line.lstrip())
            for inner in lines[n + 1 :]:
                if len(inner) - len(inner.lstrip()) <= depth:
                    break
                if "caesar-applianceSystemTrayIcon" in inner:
                    return inner.split('"')[1]
    return None


def wait_for_title(display: str, text: str, timeout: float = 60, app: ServerProcess | None = None) -> str:
    deadline = time.monotonic() + timeout
    title = None
    while time.monotonic() < deadline:
        title = docked_title(display)
        if title and text in title:
            return title
        time.sleep(0.1)
    raise AssertionError(
        f"the tray icon did not show {text!r} (last: {title!r}); windows:\n{windows(display)}\n"
        f"appliance's stderr:\n{app.errors()[-3000:] if app else ''}"
    )


def test_icon_docks_when_the_tray_host_starts_later(tmp_path):
    """A desktop session may start the appliance before its panel: the icon docks once a tray host appears."""
    xvfb, name = start_xvfb()
    tray = None
    try:
        with ServerProcess(tmp_path / "home", "--no-browser", command=LAUNCHER, env={"DISPLAY": name}) as app:
            time.sleep(2)
            assert docked_title(name) is None
            tray = start_trayer(name)
            assert wait_for_title(name, "idle", timeout=30) == "caesar-appliance: idle"
            assert app.stop() == 0
    finally:
        stop(tray, xvfb)


def test_tray_docks_follows_jobs_and_stops_cleanly(display, tmp_path, slow_sky):
    browser, opened = recorder(tmp_path, "browser")
    env = {"DISPLAY": display, "BROWSER": f"{browser} %s"}
    with ServerProcess(tmp_path / "home", command=LAUNCHER, env=env) as app:
        assert wait_for_title(display, "idle", app=app) == "caesar-appliance: idle"
        assert calls(opened)[0].startswith(f"{app.url}/login?key=")
        with httpx.Client(base_url=app.url, headers=app.headers, timeout=60) as http:
            file_uuid = upload_file(http, slow_sky)
            job_id = submit(http, file_uuid, job_inputs=LONG_JOB)
            running_pid(http, job_id)
            wait_for_title(display, "1 running")
            http.post(f"{API}/job/{job_id}/cancel")
            wait_for_title(display, "idle")
            timed_out = submit(http, file_uuid, job_inputs=LONG_JOB, walltime=2)
            wait_for_job(http, timed_out, timeout=60)
            assert "last job TIMED-OUT" in wait_for_title(display, "TIMED-OUT")

            # stopping with a job running: the job's processes end, the job waits for the next start
            last = submit(http, file_uuid, job_inputs=LONG_JOB)
            pid = running_pid(http, last)
            wait_for_title(display, "1 running")
        assert app.stop(signal.SIGTERM) == 0, app.errors()
        assert group_members(pid) == []
        assert docked_title(display) is None
        assert leftovers(app.home) == []
    job = Appliance(make_settings(tmp_path / "home")).jobs.get("anonymous", last)
    assert job.state == "PENDING" and "shut down" in job.status


def test_second_launch_opens_the_running_dashboard(tmp_path):
    browser, opened = recorder(tmp_path, "browser")
    env = {"DISPLAY": "", "BROWSER": f"{browser} %s"}  # headless: no tray
    with ServerProcess(tmp_path / "home", command=LAUNCHER, env=env) as app:
        first = calls(opened)
        again = subprocess.run([*LAUNCHER, "--home", str(app.home)], env={**os.environ, **env}, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert f"already running at {app.url}" in again.stdout
        links = calls(opened, 2)
        assert links[0] == first[0] and links[1].startswith(f"{app.url}/login?key=") and links[1] != links[0]
        # each link logs a browser in once and lands on the dashboard
        for link in links:
            with httpx.Client(follow_redirects=True) as browser_client:
                page = browser_client.get(link, headers={"Accept": "text/html"})
                assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
                assert browser_client.get(link, headers={"Accept": "text/html"}).status_code == 401
        # --no-browser: the second launch only says where it runs
        quiet = subprocess.run([*LAUNCHER, "--home", str(app.home), "--no-browser"], env={**os.environ, **env},
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert quiet.returncode == 0 and len(calls(opened, 2)) == 2
        assert app.stop(signal.SIGINT) == 0, app.errors()
        assert leftovers(app.home) == []


def test_tray_menu_actions(tmp_path, sky, monkeypatch):
    """Open dashboard, open inbox folder, pause and resume the queue, quit: the functions the menu items call."""
    opener, opened_folders = recorder(tmp_path, "xdg-open")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    settings = make_settings(tmp_path / "home")
    appliance = Appliance(settings)
    appliance.start()
    urls: list[str] = []
    quit_asked = threading.Event()
    links = iter(["http://127.0.0.1:1/login?key=k1", "http://127.0.0.1:1/login?key=k2"])
    tray = Tray(appliance, lambda: next(links), quit=quit_asked.set, open_url=urls.append)
    try:
        assert tray.status() == ("idle", "caesar-appliance: idle")
        tray.open_dashboard()
        tray.open_dashboard()
        assert urls == ["http://127.0.0.1:1/login?key=k1", "http://127.0.0.1:1/login?key=k2"]  # a new link each time
        tray.open_inbox()
        assert calls(opened_folders) == [str(settings.inbox_path)]

        tray.toggle_pause()
        assert appliance.queue.paused and appliance.health()["queue"] == "paused" and appliance.health()["ok"]
        record = appliance.files.add("anonymous", sky[0])
        job = appliance.jobs.submit("anonymous", "sep", {}, record.uuid)
        time.sleep(1.5)
        assert appliance.jobs.get("anonymous", job.id).state == "PENDING"
        assert tray.status() == ("paused", "caesar-appliance: queue paused, 1 waiting")
        tray.toggle_pause()
        deadline = time.monotonic() + 60
        while appliance.jobs.get("anonymous", job.id).state != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert tray.status()[0] == "idle"

        tray.quit()
        assert quit_asked.is_set()
    finally:
        appliance.stop()


def test_icon_colour_follows_the_state():
    for state, colour in COLOURS.items():
        image = icon_image(state)
        assert image.size == (64, 64) and image.getpixel((8, 32))[:3] == colour
        assert image.getpixel((0, 0))[3] == 0  # transparent corners


def test_the_overview_says_when_the_queue_is_paused(client):
    client.appliance.queue.pause()
    assert "The queue is paused" in client.get("/").text
    client.appliance.queue.resume()
    assert "The queue is paused" not in client.get("/").text
