"""The job queue: a SqliteHuey at <home>/queue.db whose consumer runs in threads of this process.

Its tasks are the job engine's short pieces of work that take more than a moment (preparing a job's input image,
writing its catalogs): the jobs and steps tables hold every job's state, the queue only what to do next, so a task
lost in a crash is queued again from the tables. Workers sleep at most ``queue_poll_seconds`` but are woken at once
when this process enqueues a task."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from huey import SqliteHuey
from huey.consumer import Consumer, Worker

from appliance.config import Settings

log = logging.getLogger(__name__)


class PromptWorker(Worker):
    """huey's worker, sleeping on the queue's wake-up event instead of only on its stop flag. A paused queue still
    runs its tasks (the jobs already started go on to their end); the engine starts no new job meanwhile."""

    wakeup: threading.Event

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

    def __init__(self, huey: SqliteHuey, wakeup: threading.Event, **kwargs: object) -> None:
        self.wakeup = wakeup
        super().__init__(huey, **kwargs)
        self.started = threading.Event()

    def _create_worker(self) -> Worker:
        worker = super()._create_worker()
        worker.wakeup = self.wakeup
        return worker

    def start(self) -> None:
        super().start()
        self.started.set()

    def _set_signal_handlers(self) -> None:
        pass


class JobQueue:
    def __init__(
        self, settings: Settings, tasks: dict[str, Callable[[str], None]], workers: int, immediate: bool = False
    ) -> None:
        self.settings = settings
        self.workers = workers
        # immediate: a task runs in the thread that enqueues it (tests that step the engine themselves)
        self.huey = SqliteHuey("caesar-appliance", filename=str(settings.queue_path), results=False,
                               immediate=immediate, immediate_use_memory=False)  # fmt: skip
        self._tasks = {name: self.huey.task(name=name)(function) for name, function in tasks.items()}
        self._wakeup = threading.Event()
        self._paused = threading.Event()
        self._consumer: InProcessConsumer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def enqueue(self, name: str, job_id: str) -> None:
        """Queue the task ``name`` of ``job_id`` and wake a worker."""
        self.huey.enqueue(self._tasks[name].s(job_id))
        self._wakeup.set()

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

    def forget(self) -> None:
        """Drop the tasks a stopped appliance left queued: the engine queues again what the tables say is due."""
        self.huey.flush()

    def start(self) -> None:
        self._consumer = InProcessConsumer(
            self.huey,
            self._wakeup,
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
