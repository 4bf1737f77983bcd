"""The running appliance: its settings, lock, database, data store and queue, started and stopped as one."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import psutil
from astropy.utils import data as astropy_data
from astropy.utils import iers
from sqlalchemy import text

from appliance import __version__, logs
from appliance.access import Access
from appliance.apps import AppRegistry
from appliance.compare import ComparisonService
from appliance.config import Settings
from appliance.db import Database
from appliance.engine import Runners
from appliance.errors import ApplianceError, ConfigError
from appliance.idempotency import IdempotencyKeys
from appliance.inbox import Inbox
from appliance.jobs import JobService
from appliance.lock import HomeLock
from appliance.queue import JobQueue
from appliance.storage import FileStore
from runners import Runner

log = logging.getLogger(__name__)


def make_astropy_offline() -> None:
    """The appliance makes no request to the internet: astropy must use its bundled IERS table, never download."""
    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    astropy_data.conf.allow_internet = False


# What the appliance and its jobs write is readable by the user only (a lab machine has others).
OWNER_ONLY_UMASK = 0o077
# Below this, SQLite can no longer grow its journal: nothing can change, not even a deletion.
DISK_FULL_BYTES = 1 << 20
WEB_THREADS = 40  # anyio's default limit of worker threads, where the web handlers call the services


def owner_only(home: Path) -> None:
    """The home folder 0700 and everything in it without group or other access: the database, the logs, the data,
    the jobs (also what an earlier version, or a wider umask, left readable)."""
    home.chmod(0o700)
    for folder, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
            except FileNotFoundError:  # removed meanwhile
                pass


class Appliance:
    def __init__(
        self,
        settings: Settings,
        runners: dict[str, Runner] | None = None,
        clock: Any = None,
        monitor: bool = True,
    ) -> None:
        """``runners``, ``clock`` and ``monitor=False`` are for tests that step the engine themselves (``tick()``) on
        given runners; queue tasks then run in the thread that queues them."""
        self.settings = settings
        self.monitor = monitor
        self.lock = HomeLock(settings.lock_path)
        self.access = Access(settings.token_path, settings.require_login)
        # a connection for each thread that may use the database: the web handlers' and the queue's workers, and
        # the queue's consumer, the inbox, the tray and the event loop
        self.db = Database(settings.db_path, connections=WEB_THREADS + settings.workers + 4)
        self.files = FileStore(settings, self.db)
        self.apps = AppRegistry(settings)
        self.jobs = JobService(settings, self.db, self.files, self.apps, Runners(settings, runners), clock)
        self.engine = self.jobs.engine
        self.comparisons = ComparisonService(settings, self.db, self.jobs)
        self.idempotency_keys = IdempotencyKeys(self.db)
        self.inbox = Inbox(settings, self.files, self.jobs) if settings.inbox else None
        self.queue: JobQueue | None = None
        self.started_at: float | None = None
        self._log_handler: logging.Handler | None = None
        self._umask: int | None = None

    def check(self) -> None:
        """Settings that can only be judged with the apps at hand; raises ConfigError."""
        settings = self.settings
        if settings.inbox and settings.inbox_app:
            try:
                self.apps.get(settings.inbox_app).schema.validate(dict(settings.inbox_options))
            except ApplianceError as exc:
                raise ConfigError(f"inbox_app / inbox_options: {exc.message}") from None

    def start(self) -> None:
        """Lock the home folder, open the log, migrate the database, recover from a crash, start the queue."""
        settings = self.settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            self._umask = os.umask(OWNER_ONLY_UMASK)
            owner_only(settings.home)
            self._log_handler = logs.file_handler(
                settings.logs_dir, settings.log_level, settings.log_max_bytes, settings.log_backups
            )
            logs.attach(self._log_handler)
            self.check()
            if self.access.required:
                self.access.api_token  # noqa: B018 (made now, for scripts to read)
            make_astropy_offline()
            self.db.migrate()
            self.files.prepare()
            tasks = {"prepare": self.engine.prepare, "collect": self.engine.collect}
            self.queue = JobQueue(settings, tasks, settings.workers, immediate=not self.monitor)
            self.queue.forget()
            self.engine.enqueue, self.engine.paused = (
                self.queue.enqueue,
                lambda: self.queue is not None and self.queue.paused,
            )
            self.jobs.recover()
            self.comparisons.recover()
            self.idempotency_keys.recover()
            if self.monitor:
                self.queue.start()
            self.jobs.start(self.monitor)
            if self.inbox is not None:
                self.inbox.start()
        except BaseException:
            self.stop()
            raise
        self.started_at = time.monotonic()
        log.info("appliance started", extra={"home": str(settings.home), "version": __version__})

    def stop(self) -> None:
        if self.inbox is not None:
            self.inbox.stop()
        self.jobs.stop()
        if self.queue is not None:
            self.queue.stop()
            self.queue = None
        self.db.close()
        if self.started_at is not None:
            log.info("appliance stopped")
            self.started_at = None
        if self._log_handler is not None:
            logs.detach(self._log_handler)
            self._log_handler = None
        self.lock.release()
        if self._umask is not None:
            os.umask(self._umask)
            self._umask = None

    def machine(self) -> dict[str, Any]:
        """Load of this machine for the overview: CPU, memory, the data disk, and the job cores in use."""
        memory = psutil.virtual_memory()
        disk = shutil.disk_usage(self.settings.data_dir)
        return {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_used_bytes": memory.total - memory.available,
            "memory_total_bytes": memory.total,
            "disk_free_bytes": disk.free,
            "disk_total_bytes": disk.total,
            "cores_busy": self.engine.cores_in_use().get("local", 0),
            "cores_total": self.settings.cores,
            "queue_paused": self.queue is not None and self.queue.paused,
        }

    def health(self) -> dict[str, Any]:
        """What /health reports; ``ok`` is false when the database or the queue is not working, or the disk is too
        full to take uploads and jobs ("low": below the reserve; "full": not even the database can grow)."""
        try:
            with self.db.session() as session:
                session.execute(text("SELECT 1"))
            database = "ok" if self.db.schema_is_current() else "schema out of date"
        except Exception as exc:  # any failure here is the answer, not an error of the caller
            database = f"error: {exc}"
        queue = "stopped"
        if self.queue is not None and self.queue.running:
            queue = "paused" if self.queue.paused else "running"
        disk = shutil.disk_usage(self.settings.data_dir)
        space = (
            "full" if disk.free < DISK_FULL_BYTES else "low" if disk.free < self.settings.disk_reserve_bytes else "ok"
        )
        return {
            "ok": database == "ok" and queue in ("running", "paused") and space == "ok",
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0,
            "database": database,
            "queue": queue,
            "disk": space,
            "disk_free_bytes": disk.free,
            "disk_total_bytes": disk.total,
        }
