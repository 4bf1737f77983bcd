"""appliance.db: the SQLite engine (WAL, busy timeout), sessions, and Alembic migrations applied at start."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Select, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from appliance.errors import InsufficientStorage

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE = sqlite.dialect()


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=10000", "synchronous=NORMAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class Database:
    """One engine per process. Transactions use the driver's default (BEGIN at the first write), never a
    deferred BEGIN that later writes, which fails at once under concurrent writers."""

    def __init__(self, path: Path, connections: int = 5) -> None:
        """``connections`` are kept open: as many as threads use the database at once. A thread beyond them opens
        one of its own for the while rather than wait: waiting for a connection, or opening one (with its pragmas)
        for every use, cost a status poll under load more than its query."""
        self.path = path
        self.engine: Engine = create_engine(
            f"sqlite:///{path}", connect_args={"check_same_thread": False}, pool_size=connections, max_overflow=-1
        )
        event.listen(self.engine, "connect", _pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on exit, rolled back on error. A full disk is InsufficientStorage."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            if _disk_full(exc):
                raise InsufficientStorage(
                    "insufficient_storage", "the disk of the appliance's database is full: nothing was changed"
                ) from None
            raise

    def lookup(self, query: Lookup, **parameters: Any) -> dict[str, Any] | None:
        """The first row ``query`` selects with these parameters, by column name, or None.

        Lookups share one connection of their own (same pragmas), one at a time: a pooled connection's checkout and
        return, with its rollback, cost more than such a read. A lookup waits for nothing but another lookup: in WAL
        mode a reader does not wait for writers."""
        values = [parameters[name] if bind is None else bind(parameters[name]) for name, bind in query.parameters]
        with self._reader_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, check_same_thread=False)
                _pragmas(self._reader, None)
            cursor = self._reader.execute(query.sql, values)
            try:
                row = cursor.fetchone()
            finally:
                cursor.close()  # ends the read
        if row is None:
            return None
        return {
            name: value if result is None else result(value)
            for (name, result), value in zip(query.columns, row, strict=True)
        }

    def migrate(self) -> None:
        with self.engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
        return set(current) == set(ScriptDirectory.from_config(_alembic_config()).get_heads())

    def close(self) -> None:
        self.engine.dispose()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class Lookup:
    """A SELECT compiled once, for ``Database.lookup`` to run on a DBAPI cursor; parameters and values are converted
    by their types as Core converts them.

    For the hottest read, a job's status poll: what SQLAlchemy does for every execution of a statement, even one
    whose compiled form it keeps (execution context, result, row objects), took three quarters of the read's time."""

    def __init__(self, statement: Select[Any]) -> None:
        compiled = statement.compile(dialect=SQLITE)
        self.sql = compiled.string
        self.parameters = [
            (name, compiled.binds[name].type.dialect_impl(SQLITE).bind_processor(SQLITE))
            for name in compiled.positiontup or ()
        ]
        self.columns = [
            (c.key, c.type.dialect_impl(SQLITE).result_processor(SQLITE, None)) for c in statement.selected_columns
        ]


def _disk_full(exc: OperationalError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(orig)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
