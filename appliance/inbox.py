"""The inbox folder: FITS files put there are taken into the data store, and optionally run through a finder.

A file is taken only once it has stopped growing (same size and modification time for ``inbox_settle_seconds``).
It is first renamed into ``.taking/`` (so a copy still being written under the same name is never mixed up with
it), stored as an upload of it would be, and removed only once registered. A file that is not a usable image goes
to ``rejected/`` with ``<name>.reason.txt`` beside it. If the appliance dies midway, the file is still in
``.taking/`` and is taken again at the next start; one already registered (same name and sha256) is not stored
twice. Hidden files (a leading dot, as rsync and many editors use while writing) are left alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from appliance.config import Settings
from appliance.errors import ApplianceError, InsufficientStorage
from appliance.jobs import JobService
from appliance.storage import FileStore

log = logging.getLogger(__name__)

TAKING = ".taking"
REJECTED = "rejected"
RESCAN_SECONDS = 30.0  # a full look at the folder now and then, in case the file system missed telling us


class Inbox:
    def __init__(self, settings: Settings, files: FileStore, jobs: JobService) -> None:
        self.settings = settings
        self.files = files
        self.jobs = jobs
        self.folder = settings.inbox_path
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path → (size, mtime_ns, unchanged since)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take over what a stopped appliance left in ``.taking/``, then watch the folder (files already there
        count as new)."""
        for name in (TAKING, REJECTED):
            (self.folder / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((self.folder / TAKING).iterdir()):
            self._take_over(path)
        self._stop.clear()
        self._observer = Observer()
        self._observer.schedule(_Changes(self), str(self.folder), recursive=False)
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name="inbox", daemon=True)
        self._thread.start()
        log.info("inbox watched", extra={"folder": str(self.folder)})

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def notice(self) -> None:
        """Called by the watcher for every change in the folder."""
        self._wake.set()

    def _loop(self) -> None:
        next_rescan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_rescan:
                next_rescan = now + RESCAN_SECONDS
            self._scan(now)
            # look again soon while files are settling, else wait for the watcher (or the periodic rescan)
            timeout = min(0.25, self.settings.inbox_settle_seconds / 4) if self._seen else next_rescan - now
            self._wake.wait(max(timeout, 0.05))
            self._wake.clear()

    def _scan(self, now: float) -> None:
        present: set[Path] = set()
        try:
            entries = list(os.scandir(self.folder))
        except OSError as exc:
            log.warning("cannot read the inbox", extra={"folder": str(self.folder), "reason": str(exc)})
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            present.add(path)
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            size, mtime = stat.st_size, stat.st_mtime_ns
            previous = self._seen.get(path)
            if previous is None or previous[:2] != (size, mtime):
                self._seen[path] = (size, mtime, now)
            elif now - previous[2] >= self.settings.inbox_settle_seconds:
                del self._seen[path]
                try:
                    self._take(path)
                except Exception:  # keep watching; the file stays in .taking/ for the next start
                    log.exception("inbox file not taken", extra={"action": "inbox", "file_name": path.name})
            if self._stop.is_set():
                return
        for gone in set(self._seen) - present:
            del self._seen[gone]

    def _take(self, path: Path) -> None:
        taking = self.folder / TAKING / path.name
        try:
            os.rename(path, taking)
        except FileNotFoundError:
            return  # moved away meanwhile
        self._store(taking, retry_from=path)

    def _take_over(self, taking: Path) -> None:
        """A file the appliance was taking when it stopped: store it unless that already happened."""
        if not taking.is_file():
            return
        digest = _sha256(taking)
        record = self.files.find_copy(self.settings.user, taking.name, digest)
        if record is None:
            self._store(taking, retry_from=self.folder / taking.name)
            return
        log.info("inbox file was already stored", extra={"action": "inbox", "file": record.uuid})
        if self.settings.inbox_app and not self.jobs.list(self.settings.user, file_uuid=record.uuid)[1]:
            self._run(record.uuid)
        taking.unlink()

    def _store(self, taking: Path, retry_from: Path) -> None:
        try:
            record = self.files.add(self.settings.user, taking, tag=self.settings.inbox_tag or None)
        except (InsufficientStorage, OSError) as exc:
            # not the file's fault: put it back and try again later
            os.replace(taking, retry_from)
            log.warning(
                "inbox file left for later", extra={"action": "inbox", "file_name": taking.name, "reason": str(exc)}
            )
            return
        except ApplianceError as exc:
            self._reject(taking, exc.message)
            return
        taking.unlink()
        log.info("inbox file stored", extra={"action": "inbox", "file_name": taking.name, "file": record.uuid})
        if self.settings.inbox_app:
            self._run(record.uuid)

    def _run(self, file_uuid: str) -> None:
        settings = self.settings
        try:
            job = self.jobs.submit(settings.user, settings.inbox_app, dict(settings.inbox_options), file_uuid,
                                   tag=settings.inbox_tag or None)  # fmt: skip
        except ApplianceError as exc:
            log.error("inbox job not started", extra={"action": "inbox", "file": file_uuid, "reason": exc.message})
            return
        log.info("inbox job submitted", extra={"action": "inbox", "file": file_uuid, "job": job.id})

    def _reject(self, taking: Path, reason: str) -> None:
        rejected = self.folder / REJECTED
        target = rejected / taking.name
        n = 1
        while target.exists():
            target = rejected / f"{taking.stem}.{n}{taking.suffix}"
            n += 1
        note = target.with_name(target.name + ".reason.txt")
        note.write_text(f"{taking.name} was not taken into caesar-appliance on {datetime.now(UTC):%Y-%m-%d %H:%M:%S} "
                        f"UTC:\n{reason}\n")  # fmt: skip
        os.rename(taking, target)
        log.warning("inbox file rejected", extra={"action": "inbox", "file_name": taking.name, "reason": reason})


class _Changes(FileSystemEventHandler):
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.inbox.notice()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()
