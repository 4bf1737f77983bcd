"""The desktop bundle: its size and how fast it answers after launch, next to the same appliance run from the
checkout's virtualenv in the same run.

The bundle is built fresh with ./manage bundle (the build time is printed). Start-up is the time from starting the
process to the first 200 from /health, headless; medians of ROUNDS, bundle and checkout interleaved, on a new home
folder (database created and migrated) and on the same home again (a restart).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 5
PORT_BASE = 18760


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="caesar-bench-bundle-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        subprocess.run([str(REPO / "manage"), "bundle", str(work / "dist")], check=True, capture_output=True)
        build_seconds = time.monotonic() - started
        folder = work / "dist" / "caesar-appliance"
        size, files = folder_size(folder)
        print(f"bundle: {folder.name}/ {size / 2**20:.0f} MiB in {files} files, built in {build_seconds:.0f} s")
        parts = sorted(((folder_size(p)[0], p.name) for p in (folder / "_internal").iterdir()), reverse=True)
        print("largest parts: " + ", ".join(f"{name} {part / 2**20:.0f} MiB" for part, name in parts[:8]))

        commands = {
            "bundle": [str(folder / "caesar-appliance"), "--no-browser"],
            "checkout (.venv python)": [sys.executable, "-m", "appliance", "serve"],
        }
        times: dict[tuple[str, str], list[float]] = {(k, s): [] for k in commands for s in ("new home", "restart")}
        for n in range(ROUNDS):
            for label, command in commands.items():
                home = work / f"home-{label[:6]}-{n}"
                for situation in ("new home", "restart"):
                    times[(label, situation)].append(startup_seconds(command, home, PORT_BASE + n))

    print(f"\nstart-up: process start to first /health 200, median of {ROUNDS} (min-max)")
    for situation in ("new home", "restart"):
        bundle = statistics.median(times[("bundle", situation)])
        baseline = statistics.median(times[("checkout (.venv python)", situation)])
        for label in commands:
            values = times[(label, situation)]
            ratio = f"   {bundle / baseline:.2f} x the checkout" if label == "bundle" else ""
            print(f"  {situation:9} {label:24} {statistics.median(values):5.2f} s  "
                  f"({min(values):.2f}-{max(values):.2f}){ratio}")  # fmt: skip


def startup_seconds(command: list[str], home: Path, port: int) -> float:
    env = {**os.environ, "DISPLAY": "", "CAESAR_APPLIANCE_TRAY": "false"}
    started = time.monotonic()
    process = subprocess.Popen([*command, "--home", str(home), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/caesar/api/v1.0/health", timeout=1) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {process.returncode} before answering") from None
                time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def folder_size(path: Path) -> tuple[int, int]:
    if path.is_file():
        return path.stat().st_size, 1
    total = count = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(root, name)).st_size
            count += 1
    return total, count
