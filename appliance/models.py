"""The ORM tables of appliance.db: registered files and the jobs that use them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, String, Text, TypeDecorator
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
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


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
    file_uuid: Mapped[str] = mapped_column(ForeignKey("files.uuid", ondelete="RESTRICT"))
    job_inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    tag: Mapped[str | None] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(Text)
    submit_date: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_jobs_user_submit", "user", "submit_date"),
        Index("ix_jobs_file_state", "file_uuid", "state"),
    )


LIVE_JOB_STATES = ("PENDING", "STARTED", "RUNNING")
