"""Alembic migrations build exactly the schema the ORM models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from appliance.db import Database
from appliance.models import Base


def test_migrations_match_the_models(tmp_path):
    db = Database(tmp_path / "appliance.db")
    db.migrate()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        assert inspect(connection).get_table_names() == ["alembic_version", "files", "jobs"]
    assert db.schema_is_current()
    db.migrate()  # applying again at the next start is a no-op
    db.close()


def test_database_runs_in_wal_mode_with_foreign_keys(tmp_path):
    db = Database(tmp_path / "appliance.db")
    db.migrate()
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.close()
