"""The ORM tables of appliance.db: registered files, the jobs that use them, comparisons, idempotency keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, hands back timezone-aware datetimes (SQLite keeps no zone of its own)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(timezone.utc)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"})


class StoredFile(Base):
    """A validated FITS image whose bytes are at ``<home>/data/<relpath>``."""

    __tablename__ = "files"

    uuid: Mapped[str] = mapped_column(String(32), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    filename_orig: Mapped[str] = mapped_column(String(255))
    fileext: Mapped[str] = mapped_column(String(16))
    relpath: Mapped[str] = mapped_column(String(512), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    tag: Mapped[str | None] = mapped_column(String(256))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_files_user_created", "user", "created"),)


class Job(Base):
    """One app run on one registered file. States use caesar-rest's names (PENDING ... CANCELED)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    app: Mapped[str] = mapped_column(String(64))
    # the file's uuid as submitted; file_uuid links to it while the file exists (a file may outlive none of its
    # finished jobs: deleting it keeps the jobs and their products)
    data_inputs: Mapped[str] = mapped_column(String(64))
    file_uuid: Mapped[str | None] = mapped_column(ForeignKey("files.uuid", ondelete="SET NULL"))
    job_inputs: Mapped[dict[str, Any]] = mapped_column(JSON)  # as submitted
    options: Mapped[dict[str, Any]] = mapped_column(JSON)  # validated, defaults filled
    tag: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(Text)
    submit_date: Mapped[datetime] = mapped_column(UTCDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    cores: Mapped[int] = mapped_column(Integer)
    walltime: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    runner: Mapped[str] = mapped_column(String(64))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the runner's handle of the step running now
    pid: Mapped[str] = mapped_column(String(64), default="")
    task_id: Mapped[str | None] = mapped_column(String(64))  # the queue task that will run it
    # where it is in its life (the engine's, finer than the state): queued, prepare, run, children, collect, ended
    stage: Mapped[str] = mapped_column(String(16), default="queued")
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)  # start + wall time: stopped TIMED-OUT past it
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_reason: Mapped[str | None] = mapped_column(String(16))  # why the engine stopped its step: canceled, timed-out
    # the job it is part of (a tile's mosaic); not a foreign key: SQLite adds one only by copying the table, which
    # would delete every comparison through their cascade. Deleting a parent deletes its children (JobService.delete)
    parent_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        Index("ix_jobs_user_submit", "user", "submit_date"),
        Index("ix_jobs_file_state", "file_uuid", "state"),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_parent", "parent_id"),
    )


class Step(Base):
    """One command of one attempt of a job, as a runner runs it: its spec, the runner's handle, and how it went."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # runners.RunSpec.to_json()
    runner: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # waiting, queued, running, ended, lost
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(128), default="")  # the handle's label: a pid, a container
    exit_code: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(128))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    term_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kill_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of its output copied to the job log

    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "number"),
        Index("ix_steps_runner_state", "runner", "state"),
    )


class Comparison(Base):
    """A finished job cross-matched with another on the same image, or with an uploaded catalog (job_b is then null
    and the summary names the catalog); the products are in <home>/comparisons/<user>/<id>/."""

    __tablename__ = "comparisons"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user: Mapped[str] = mapped_column(String(128))
    job_a: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    job_b: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    radius_arcsec: Mapped[float] = mapped_column(Float)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_comparisons_user_created", "user", "created"),)


class IdempotencyKey(Base):
    """A client's Idempotency-Key and the first answer to the request it came with (null while that runs)."""

    __tablename__ = "idempotency_keys"

    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    operation: Mapped[str] = mapped_column(String(2048))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[list[list[str]] | None] = mapped_column(JSON)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_idempotency_keys_created", "created"),)


LIVE_JOB_STATES = ("PENDING", "STARTED", "RUNNING", "CANCELING")
ACTIVE_STEP_STATES = ("queued", "running")
TERMINAL_JOB_STATES = ("SUCCESS", "FAILURE", "TIMED-OUT", "CANCELED", "ABORTED")
