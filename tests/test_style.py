"""The code reads one way: ruff's lint rules and formatter, as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PACKAGES = ["appliance", "web", "runners", "tests", "bench"]


def test_ruff_lint_and_format():
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *PACKAGES], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
