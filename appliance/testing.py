"""A real `caesar-appliance serve` child process on a free port, for the end-to-end tests and the benchmarks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

API_PREFIX = "/caesar/api/v1.0"


class ServerProcess:
    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.stderr = tempfile.TemporaryFile(mode="w+")

    @property
    def api(self) -> str:
        return self.url + API_PREFIX

    def start(self, timeout: float = 60) -> ServerProcess:
        """Start and wait until /health says ok; raises with the server's stderr if it does not get there."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--home", str(self.home), "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=self.env,
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        match = re.search(r"serving (http://\S+)", line)
        if not match:
            self.process.wait(timeout)
            raise RuntimeError(f"the appliance did not start (exit {self.process.returncode}): {self.errors()}")
        self.url = match.group(1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.api + "/health", timeout=2) as reply:
                    if json.load(reply)["ok"]:
                        return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the appliance did not become healthy: {self.errors()}")

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``signum`` and wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        self.stderr.close()
