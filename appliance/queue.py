"""The job queue: a SqliteHuey at <home>/queue.db whose consumer runs in threads of this process."""

from __future__ import annotations

import logging
import threading

from huey import SqliteHuey
from huey.consumer import Consumer

from appliance.config import Settings

log = logging.getLogger(__name__)


class InProcessConsumer(Consumer):
    """huey's consumer without its signal handlers (the web server owns the process's signals), which says when its
    workers are up: stopping it before that would try to join threads that never started."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()

    def start(self) -> None:
        super().start()
        self.started.set()

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.huey = SqliteHuey("caesar-appliance", filename=str(settings.queue_path), results=False)
        self._consumer: InProcessConsumer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._consumer = InProcessConsumer(
            self.huey,
            workers=self.settings.queue_workers,
            worker_type="thread",
            initial_delay=0.05,
            backoff=1.5,
            max_delay=self.settings.queue_poll_seconds,
            periodic=False,
            shutdown_timeout=self.settings.shutdown_grace_seconds,
        )
        self._thread = threading.Thread(target=self._consumer.run, name="queue-consumer", daemon=True)
        self._thread.start()
        if not self._consumer.started.wait(10):
            raise RuntimeError("the queue consumer did not start within 10 s")
        log.info("queue consumer started", extra={"workers": self.settings.queue_workers})

    def stop(self) -> None:
        if self._consumer is None or self._thread is None:
            return
        self._consumer.stop(graceful=True)
        self._thread.join(self.settings.shutdown_grace_seconds + 1)
        self._consumer = self._thread = None
        self.huey.storage.close()
        log.info("queue consumer stopped")
