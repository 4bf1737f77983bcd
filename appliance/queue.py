"""The job queue: a SqliteHuey at <home>/queue.db whose consumer runs in threads of this process.

One task exists, ``run_job(job_id)``; the jobs table holds every job's state, the queue only which job to run next.
Workers sleep at most ``queue_poll_seconds`` but are woken at once when this process enqueues a job."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from huey import SqliteHuey
from huey.consumer import Consumer, Worker

from appliance.config import Settings

log = logging.getLogger(__name__)


class PromptWorker(Worker):
    """huey's worker, sleeping on the queue's wake-up event instead of only on its stop flag, and taking nothing
    while the queue is paused."""

    wakeup: threading.Event
    paused: threading.Event

    def loop(self, now=None):  # type: ignore[no-untyped-def]
        if self.paused.is_set():
            self.sleep()
            return
        super().loop(now)

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        if self.wakeup.wait(self.delay):
            self.wakeup.clear()
            self.delay = self.default_delay
        else:
            self.delay *= self.backoff


class InProcessConsumer(Consumer):
    """huey's consumer without its signal handlers (the web server owns the process's signals), which says when its
    workers are up: stopping it before that would try to join threads that never started."""

    worker_class = PromptWorker

    def __init__(self, huey: SqliteHuey, wakeup: threading.Event, paused: threading.Event, **kwargs: object) -> None:
        self.wakeup = wakeup
        self.paused = paused
        super().__init__(huey, **kwargs)
        self.started = threading.Event()

    def _create_worker(self) -> Worker:
        worker = super()._create_worker()
        worker.wakeup = self.wakeup
        worker.paused = self.paused
        return worker

    def start(self) -> None:
        super().start()
        self.started.set()

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    def __init__(self, settings: Settings, run_job: Callable[[str], None], workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.huey = SqliteHuey("caesar-appliance", filename=str(settings.queue_path), results=False)
        self._run_job = self.huey.task(name="run_job")(run_job)
        self._wakeup = threading.Event()
        self._paused = threading.Event()
        self._consumer: InProcessConsumer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def enqueue(self, job_id: str) -> str:
        """Queue ``job_id`` and wake a worker; returns the queue task id."""
        task = self._run_job.s(job_id)
        self.huey.enqueue(task)
        self._wakeup.set()
        return task.id

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def pause(self) -> None:
        """Start no more jobs (running ones go on) until ``resume``."""
        self._paused.set()
        log.info("queue paused", extra={"action": "pause"})

    def resume(self) -> None:
        self._paused.clear()
        self._wakeup.set()
        log.info("queue resumed", extra={"action": "resume"})

    def revoke(self, task_id: str) -> None:
        self.huey.revoke_by_id(task_id, revoke_once=True)

    def pending_task_ids(self) -> set[str]:
        return {task.id for task in self.huey.pending()}

    def start(self) -> None:
        self._consumer = InProcessConsumer(
            self.huey,
            self._wakeup,
            self._paused,
            workers=self.workers,
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
        log.info("queue consumer started", extra={"workers": self.workers})

    def stop(self) -> None:
        if self._consumer is None or self._thread is None:
            return
        self._consumer.stop(graceful=True)
        self._wakeup.set()
        self._thread.join(self.settings.shutdown_grace_seconds + 1)
        self._consumer = self._thread = None
        self.huey.storage.close()
        log.info("queue consumer stopped")
