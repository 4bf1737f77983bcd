"""The desktop bundle, built with the README's command (./manage bundle) and run as a user would: from its own folder,
on a machine without Python (every Python installation hidden in a mount namespace), headless on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.testing import ServerProcess
from tests.conftest import API, REPO, upload_file, wait_for_job
from tests.test_desktop import leftovers
from tests.test_jobs import submit

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Iterator[Path]:
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([str(REPO / "manage"), "bundle", str(dist)], capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout + build.stderr
    folder = dist / "caesar-appliance"
    for name in ("caesar-appliance", "caesar-appliance.desktop", "caesar-appliance.png", "install-desktop-entry"):
        assert (folder / name).is_file(), name
    yield folder


def without_python(binary: Path, empty: Path) -> list[str]:
    """``binary`` run in a mount namespace where every Python installation of this machine (and this checkout) is
    hidden under an empty folder: what a machine without Python looks like to it."""
    hidden = {Path(sys.base_prefix), Path(sys.prefix), REPO, *Path("/usr/lib").glob("python3*"),
              *Path("/usr/local/lib").glob("python3*")}  # fmt: skip
    outermost = [p for p in hidden if p.is_dir() and not any(o != p and p.is_relative_to(o) for o in hidden)]
    mounts = " && ".join(f"mount --bind '{empty}' '{path}'" for path in sorted(outermost))
    namespace = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--mount", "--map-root-user"]
    return [*namespace, "sh", "-c", f'{mounts} && exec "$0" "$@"', str(binary)]


def bare_env(home: Path) -> dict[str, str]:
    """What a desktop session gives a program: no virtualenv, no PYTHONPATH, no display."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_bundle_runs_headless_and_runs_finders(bundle, tmp_path, sky):
    binary = bundle / "caesar-appliance"
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=bare_env(tmp_path))
    assert version.returncode == 0 and version.stdout.startswith("caesar-appliance ")

    home, empty = tmp_path / "home", tmp_path / "empty"
    empty.mkdir()
    hidden_python = subprocess.run([*without_python(Path("/bin/sh"), empty), "-c", "python3 -c 1"], capture_output=True)
    assert hidden_python.returncode != 0, "python3 still works in the namespace meant to have no Python"
    command = without_python(binary, empty)
    with ServerProcess(home, "--no-browser", command=command, env=bare_env(tmp_path), inherit_env=False) as app:
        with httpx.Client(base_url=app.url, headers=app.headers, timeout=60) as http:
            health = http.get(f"{API}/health").json()
            assert health["ok"] and health["queue"] == "running"
            file_uuid = upload_file(http, sky[0])
            jobs = {name: submit(http, file_uuid, app=name) for name in ("aegean", "sep", "pybdsf")}
            for name, job_id in jobs.items():
                status = wait_for_job(http, job_id, timeout=300)
                assert status["state"] == "SUCCESS", (name, status, http.get(f"{API}/job/{job_id}/log").text[-2000:])
                assert len(http.get(f"{API}/job/{job_id}/source-components").json()["sources"]) >= 15, name
            # the pages, the API description and the vendored scripts come from inside the bundle
            with httpx.Client(follow_redirects=True) as browser:
                overview = browser.get(app.login_url, headers={"Accept": "text/html"})
                assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
                assert browser.get(f"{app.url}/jobs/{jobs['aegean']}").status_code == 200
            assert http.get("/docs").status_code == 200
            assert http.get("/static/vendor/htmx/htmx.min.js").status_code == 200
        assert app.stop(signal.SIGTERM) == 0, app.errors()
        assert leftovers(home) == []
    log = [json.loads(line) for line in (home / "logs" / "appliance.log").read_text().splitlines()]
    assert log[-1]["message"] == "appliance stopped"
    assert not [e for e in log if e["level"] in ("ERROR", "CRITICAL")]


def test_desktop_entry_points_at_the_unpacked_bundle(bundle, tmp_path):
    env = {**bare_env(tmp_path), "XDG_DATA_HOME": str(tmp_path / "share")}
    subprocess.run([str(bundle / "install-desktop-entry")], check=True, env=env, capture_output=True)
    entry = (tmp_path / "share" / "applications" / "caesar-appliance.desktop").read_text()
    assert f'Exec="{bundle}/caesar-appliance"' in entry and "Icon=caesar-appliance" in entry
    assert (tmp_path / "share" / "icons" / "hicolor" / "256x256" / "apps" / "caesar-appliance.png").is_file()
