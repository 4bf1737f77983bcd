"""The data store: uploads written atomically under <home>/data/<user>/, validated as FITS, registered in the DB.

An upload goes to tmp/uploads/<uuid>.part, is fsynced, inspected with astropy, renamed to data/<user>/<uuid>.<ext>
(then the folder is fsynced) and only then gets its DB row. A crash leaves at worst a temp file or unregistered bytes,
both removed by ``recover()`` at the next start; a registered row always has its bytes.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import unicodedata
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from appliance.config import Settings
from appliance.db import Database
from appliance.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    TooLarge,
    UnsupportedType,
)
from appliance.fitsimage import FITS_MAGIC, inspect_fits, sniff
from appliance.models import LIVE_JOB_STATES, Job, StoredFile

log = logging.getLogger(__name__)

EXTENSIONS = ("fits.gz", "fit.gz", "fts.gz", "fits", "fit", "fts")
_UUID = re.compile(r"^[0-9a-f]{32}$")
_USER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
MAX_TAG_LENGTH = 256
COPY_BLOCK = 4 << 20
_HASHER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upload-hash")


def file_extension(filename: str) -> str:
    """The accepted extension of ``filename`` (lower case, without the dot), or UnsupportedType."""
    lower = filename.lower()
    for ext in EXTENSIONS:
        if lower.endswith("." + ext) and len(lower) > len(ext) + 1:
            return ext
    raise UnsupportedType(
        "unsupported_extension",
        f"{filename!r} is not a FITS file name: accepted extensions are " + ", ".join("." + e for e in EXTENSIONS),
    )


def clean_filename(filename: str) -> str:
    """The original name as shown back to the user: last path component, NFC, ≤ 255 chars, without the characters
    that print nothing or change how the rest prints: controls, bidi overrides (U+202E shows "x<U+202E>txt.fits" as
    "xstif.txt"), zero-width and unassigned code points, line and paragraph separators."""
    last = unicodedata.normalize("NFC", filename.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in last if not _non_printing(c)).strip()
    if not name or name in {".", ".."}:
        raise InvalidRequest("missing_filename", "the upload has no file name")
    return name[-255:]


def _non_printing(character: str) -> bool:
    return unicodedata.category(character) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def clean_tag(tag: str | None) -> str | None:
    if tag is None or not tag.strip():
        return None
    if len(tag) > MAX_TAG_LENGTH or any(_non_printing(c) for c in tag):
        raise InvalidRequest("invalid_tag", f"a tag is at most {MAX_TAG_LENGTH} printable characters")
    return tag.strip()


class Upload:
    """One upload in progress. Bytes are hashed and written as they arrive; nothing is visible until ``finish``.

    Use as a context manager: leaving it without ``finish`` (an error, a dropped connection) removes the temp file."""

    def __init__(self, store: FileStore, user: str, filename: str) -> None:
        self.store = store
        self.user = user
        self.filename = clean_filename(filename)
        self.ext = file_extension(self.filename)
        self.uuid = uuidlib.uuid4().hex
        self.size = 0
        self._sha = hashlib.sha256()
        self._head = b""
        self._previous_start: int | None = None
        self._advise_from: int | None = None
        self.temp_path = store.uploads_tmp / f"{self.uuid}.part"
        self._fd: int | None = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def write(self, *chunks: bytes | bytearray) -> None:
        """Append ``chunks``. The hash is computed beside the write (hashlib releases the GIL)."""
        fd = self._open_fd()
        start = self.size
        self.size += sum(len(chunk) for chunk in chunks)
        if self.size > self.store.settings.upload_max_bytes:
            raise TooLarge("too_large", _too_large_message(self.store.settings.upload_max_bytes))
        self._sniff(chunks)
        hashed = _HASHER.submit(_hash_all, self._sha, chunks)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
        except OSError as exc:
            raise _storage_error(exc) from None
        finally:
            hashed.result()
        self._start_writeback(fd, start)

    def _sniff(self, chunks: tuple[bytes | bytearray, ...]) -> None:
        """Refuse non-FITS content from its first bytes, before gigabytes of it are stored."""
        for chunk in chunks:
            if len(self._head) >= len(FITS_MAGIC):
                return
            self._head += chunk[: len(FITS_MAGIC) - len(self._head)]
            if len(self._head) >= len(FITS_MAGIC):
                sniff(self._head)

    def _start_writeback(self, fd: int, start: int) -> None:
        """Ask the kernel to write out the previous write's bytes now and to drop the ones before them (clean by
        then) from the page cache: a multi-GiB upload neither fills memory with dirty pages nor ends in a long fsync."""
        if self._advise_from is not None:
            os.posix_fadvise(fd, self._advise_from, start - self._advise_from, os.POSIX_FADV_DONTNEED)
        self._advise_from, self._previous_start = self._previous_start, start

    def finish(self, tag: str | None = None) -> StoredFile:
        """Validate the bytes as FITS and register them. On any error nothing remains, on disk or in the DB."""
        fd = self._open_fd()
        try:
            tag = clean_tag(tag)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _storage_error(exc) from None
            os.close(fd)
            self._fd = None
            if self.size == 0:
                raise InvalidRequest("empty_file", f"{self.filename!r} is empty")
            settings = self.store.settings
            summary = inspect_fits(
                self.temp_path,
                header_max_cards=settings.header_max_cards,
                decompressed_max_bytes=settings.decompressed_limit,
            )
            return self.store._register(self, tag, summary.to_dict())
        finally:
            self.abort()

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.temp_path.unlink(missing_ok=True)

    def _open_fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("upload already finished or aborted")
        return self._fd

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def _hash_all(sha: hashlib._Hash, chunks: tuple[bytes | bytearray, ...]) -> None:
    for chunk in chunks:
        sha.update(chunk)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FileStore:
    """Registered FITS files of every user: upload, list, look up, delete, and recovery after a crash."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.uploads_tmp = settings.tmp_dir / "uploads"

    def prepare(self) -> dict[str, int]:
        """Create the folders and clean up after an earlier crash. Returns what was removed."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.uploads_tmp.mkdir(parents=True, exist_ok=True)
        return self.recover()

    def begin_upload(self, user: str, filename: str, declared_size: int | None = None) -> Upload:
        """Start an upload after the checks that need no bytes: name, declared size, free disk space."""
        _check_user(user)
        limit = self.settings.upload_max_bytes
        if declared_size is not None and declared_size > limit:
            raise TooLarge("too_large", _too_large_message(limit))
        self.check_free_space("the upload", declared_size or 0)
        return Upload(self, user, filename)

    def check_free_space(self, what: str, size: int = 0) -> None:
        """Refuse (InsufficientStorage) what would leave less than the reserve free on the data disk."""
        free = shutil.disk_usage(self.settings.data_dir).free
        reserve = self.settings.disk_reserve_bytes
        if free < size + reserve:
            raise InsufficientStorage(
                "insufficient_storage",
                f"not enough free disk space: {_size(free)} free, {_size(size + reserve)} needed ({what} plus the "
                f"{_size(reserve)} reserve, setting disk_reserve_bytes)",
            )

    def _register(self, upload: Upload, tag: str | None, summary: dict) -> StoredFile:
        relpath = f"{upload.user}/{upload.uuid}.{upload.ext}"
        final = self.settings.data_dir / relpath
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(upload.temp_path, final)
        _fsync_dir(final.parent)
        record = StoredFile(
            uuid=upload.uuid,
            user=upload.user,
            filename_orig=upload.filename,
            fileext=upload.ext,
            relpath=relpath,
            size_bytes=upload.size,
            sha256=upload.sha256,
            created=datetime.now(UTC),
            tag=tag,
            summary=summary,
        )
        try:
            with self.db.session() as session:
                session.add(record)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        log.info("file registered", extra={"action": "upload", "user": upload.user, "file": upload.uuid})
        return record

    def add(self, user: str, source: Path, tag: str | None = None) -> StoredFile:
        """Store a copy of the file at ``source`` (left in place) exactly as an upload of it would be."""
        with source.open("rb") as f, self.begin_upload(user, source.name, os.fstat(f.fileno()).st_size) as upload:
            while block := f.read(COPY_BLOCK):
                upload.write(block)
            return upload.finish(tag)

    def find_copy(self, user: str, filename: str, sha256: str) -> StoredFile | None:
        """A registered file of ``user`` with this name and content, if any."""
        with self.db.session() as session:
            return session.scalars(
                select(StoredFile).where(
                    StoredFile.user == user, StoredFile.filename_orig == filename, StoredFile.sha256 == sha256
                )
            ).first()

    def earlier_copy(self, record: StoredFile) -> StoredFile | None:
        """The first file of the same user with the same bytes, uploaded before this one (under any name)."""
        with self.db.session() as session:
            return session.scalars(
                select(StoredFile)
                .where(
                    StoredFile.user == record.user,
                    StoredFile.sha256 == record.sha256,
                    StoredFile.uuid != record.uuid,
                    StoredFile.created <= record.created,
                )
                .order_by(StoredFile.created)
            ).first()

    def get(self, user: str, file_uuid: str) -> StoredFile:
        with self.db.session() as session:
            record = session.get(StoredFile, file_uuid) if _UUID.match(file_uuid) else None
            if record is None or record.user != user:
                raise NotFound("file_not_found", f"File with uuid {file_uuid} not found on the system!")
            return record

    def path(self, record: StoredFile) -> Path:
        return self.settings.data_dir / record.relpath

    def open_path(self, user: str, file_uuid: str) -> tuple[StoredFile, Path]:
        """The record and the path of its bytes, checked to exist."""
        record = self.get(user, file_uuid)
        path = self.path(record)
        if not path.is_file():
            log.error("registered file has no bytes", extra={"user": user, "file": file_uuid, "path": str(path)})
            raise NotFound("file_missing", f"File with uuid {file_uuid} not found on the system!")
        return record, path

    def list(
        self, user: str, tag: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[StoredFile], int]:
        """A page of the user's files, newest first, and the total count."""
        where = [StoredFile.user == user]
        if tag is not None:
            where.append(StoredFile.tag == tag)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(StoredFile).where(*where)) or 0
            rows = session.scalars(
                select(StoredFile)
                .where(*where)
                .order_by(StoredFile.created.desc(), StoredFile.uuid)
                .limit(limit)
                .offset(offset)
            ).all()
            return list(rows), total

    def delete(self, user: str, file_uuid: str) -> None:
        """Unregister, then remove the bytes; a crash in between leaves unregistered bytes for ``recover``."""
        with self.db.session() as session:
            record = session.get(StoredFile, file_uuid) if _UUID.match(file_uuid) else None
            if record is None or record.user != user:
                raise NotFound("file_not_found", f"File with uuid {file_uuid} not found on the system!")
            live = session.execute(
                select(Job.id, Job.app, Job.submit_date, Job.state)
                .where(Job.file_uuid == file_uuid, Job.state.in_(LIVE_JOB_STATES))
                .order_by(Job.submit_date)
            ).all()
            if live:
                named = ", ".join(
                    f"{app} submitted {when:%Y-%m-%d %H:%M} UTC ({state.lower()})" for _, app, when, state in live
                )
                raise Conflict(
                    "file_in_use",
                    f"{record.filename_orig} is used by {len(live)} job(s) that have not ended: {named}. Cancel them "
                    "or wait for them to end",
                    jobs=[job_id for job_id, *_ in live],
                )
            path = self.path(record)
            session.delete(record)
        path.unlink(missing_ok=True)
        cache = self.settings.cache_dir
        for cached in [*cache.glob(f"*/{file_uuid}.*"), *cache.glob(f"*/.{file_uuid}.*")]:
            cached.unlink(missing_ok=True)  # the viewer's copy and the quicklook, made or being made
        log.info("file deleted", extra={"action": "delete", "user": user, "file": file_uuid})

    def recover(self) -> dict[str, int]:
        """Remove temp files of interrupted uploads and cache writes (hidden files under cache/), and bytes and cached
        copies of files that never got (or lost) their DB row."""
        removed = {"temp_files": 0, "unregistered_files": 0}
        cache = self.settings.cache_dir
        for temp in [*self.uploads_tmp.glob("*"), *(p for p in cache.rglob(".*") if p.is_file())]:
            temp.unlink(missing_ok=True)
            removed["temp_files"] += 1
        with self.db.session() as session:
            rows = session.execute(select(StoredFile.uuid, StoredFile.relpath)).all()
        uuids, registered = {uuid for uuid, _ in rows}, {relpath for _, relpath in rows}
        for path in self.settings.data_dir.glob("*/*"):
            relpath = f"{path.parent.name}/{path.name}"
            stem = path.name.split(".", 1)[0]
            if path.is_file() and _UUID.match(stem) and relpath not in registered:
                path.unlink()
                removed["unregistered_files"] += 1
        for path in cache.glob("*/*"):  # view/<uuid>.fits, quicklook/<uuid>.png (plots/ holds a folder per job)
            stem = path.name.split(".", 1)[0]
            if path.is_file() and _UUID.match(stem) and stem not in uuids:
                path.unlink()
                removed["unregistered_files"] += 1
        if any(removed.values()):
            log.warning("recovered from an interrupted run", extra={"action": "recover", **removed})
        return removed


def _check_user(user: str) -> None:
    if not _USER.match(user) or user in {".", ".."}:
        raise InvalidRequest("invalid_user", f"invalid user name {user!r}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("insufficient_storage", "the data disk is full; the upload was discarded")
    return exc


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _too_large_message(limit: int) -> str:
    return f"the upload is larger than the limit of {limit} bytes ({limit / 2**30:.1f} GiB)"
