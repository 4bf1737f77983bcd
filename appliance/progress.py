"""How far a job has got: the finder's own progress lines in the job's log, and how long jobs of the same app took
here on images of about the same size."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIMILAR_SIZE = 2.0  # images within this factor in pixel count are of about the same size
EARLIER_JOBS = 200  # the most recent successful jobs of an app the typical time is taken from
LOG_TAIL_BYTES = 64 << 10
STEP_START = "] appliance: step "  # the appliance's line before each step: progress before it is a former step's
# a line ends, or a progress bar goes back to its start (tqdm's carriage return, PyBDSF's "cursor to column 1")
_SEGMENT = re.compile(r"\r\n?|\n|\x1b\[1G")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class FinderProgress:
    """The finder's last progress line of the step running now: what it does and, when it counts, how far."""

    stage: str
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class Typical:
    """The median run time of earlier successful jobs of an app on images of about a size."""

    seconds: float
    jobs: int


def finder_progress(log: Path, patterns: tuple[re.Pattern[str], ...]) -> FinderProgress | None:
    """The last line of the current step in ``log`` that one of the app's ``patterns`` matches. A pattern's named
    groups ``stage`` (else the whole match is the stage), ``done`` and ``total`` say what it shows."""
    if not patterns:
        return None
    try:
        with log.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    step = text.rfind(STEP_START)
    segments = _SEGMENT.split(text[step:] if step >= 0 else text)
    for segment in reversed(segments):
        line = _TERMINAL_CODES.sub("", segment).strip()
        for pattern in patterns:
            match = pattern.search(line)
            if match:
                found = match.groupdict()
                stage = " ".join((found.get("stage") or match.group(0)).split())
                done, total = found.get("done"), found.get("total")
                return FinderProgress(stage, int(done) if done else None, int(total) if total else None)
    return None


def pixel_count(summary: dict[str, Any] | None) -> int | None:
    """Pixels of the image a file summary describes (its 2-D plane)."""
    shape = (summary or {}).get("shape")
    if not shape or len(shape) < 2:
        return None
    return int(shape[-1]) * int(shape[-2])


def typical(pixels: int | None, earlier: list[tuple[float, dict[str, Any] | None]]) -> Typical | None:
    """The median of the ``earlier`` run times (seconds, with the summary of their image) on images within a factor
    SIMILAR_SIZE of ``pixels``; None without any."""
    if not pixels:
        return None
    seconds = [
        elapsed
        for elapsed, summary in earlier
        if (other := pixel_count(summary)) and 1 / SIMILAR_SIZE <= other / pixels <= SIMILAR_SIZE
    ]
    if not seconds:
        return None
    return Typical(round(statistics.median(seconds), 1), len(seconds))
