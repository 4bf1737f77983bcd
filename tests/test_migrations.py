"""Alembic migrations build exactly the schema the ORM models describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from appliance.db import Database
from appliance.models import Base


def test_migrations_match_the_models(tmp_path):
    db = Database(tmp_path / "appliance.db")
    db.migrate()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        assert inspect(connection).get_table_names() == [
            "alembic_version",
            "comparisons",
            "files",
            "idempotency_keys",
            "jobs",
            "steps",
        ]
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


def test_upgrade_from_0001_keeps_jobs_and_lets_files_outlive_them(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from appliance.db import _alembic_config

    db = Database(tmp_path / "appliance.db")
    with db.engine.begin() as connection:
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO files VALUES ('f1', 'anonymous', 'a.fits', 'fits', 'anonymous/f1.fits', 10, 'x', "
                "'2026-01-01 00:00:00', NULL, '{}')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO jobs VALUES ('j1', 'anonymous', 'aegean', 'f1', '{}', NULL, 'SUCCESS', 'done', "
                "'2026-01-01 00:00:00')"
            )
        )
    db.migrate()
    with db.engine.begin() as connection:
        row = connection.execute(text("SELECT data_inputs, options, cores, runner FROM jobs")).one()
        assert tuple(row) == ("f1", "{}", 1, "local")
        connection.execute(text("DELETE FROM files WHERE uuid = 'f1'"))
        assert connection.execute(text("SELECT file_uuid, data_inputs FROM jobs")).one() == (None, "f1")
    db.close()


def test_upgrade_from_0004_keeps_comparisons_and_lets_b_be_a_catalog(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from appliance.db import _alembic_config

    db = Database(tmp_path / "appliance.db")
    with db.engine.begin() as connection:
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.execute(
            text(
                "INSERT INTO jobs (id, user, app, data_inputs, job_inputs, options, state, status, submit_date, cores, "
                "walltime, attempts, runner, pid) VALUES ('j1', 'anonymous', 'sep', 'f1', '{}', '{}', 'SUCCESS', "
                "'done', '2026-01-01 00:00:00', 1, 60, 1, 'local', '')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO comparisons VALUES ('c1', 'anonymous', 'j1', 'j1', 'components', 6.5, "
                "'2026-01-01 00:00:00', '{}')"
            )
        )
        with pytest.raises(IntegrityError):  # before 0005, side B must be a job
            with connection.begin_nested():
                connection.execute(
                    text(
                        "INSERT INTO comparisons VALUES ('c2', 'anonymous', 'j1', NULL, 'components', 6.5, "
                        "'2026-01-01 00:00:00', '{}')"
                    )
                )
    db.migrate()
    with db.engine.begin() as connection:
        assert connection.execute(text("SELECT id, job_a, job_b FROM comparisons")).one() == ("c1", "j1", "j1")
        connection.execute(
            text(
                "INSERT INTO comparisons VALUES ('c2', 'anonymous', 'j1', NULL, 'components', 6.5, "
                "'2026-01-01 00:00:00', '{}')"
            )
        )
        connection.execute(text("DELETE FROM jobs WHERE id = 'j1'"))  # a comparison goes with its job A
        assert connection.execute(text("SELECT count(*) FROM comparisons")).scalar() == 0
    db.close()
