"""the job engine's state: a steps table, and each job's stage, deadline, cancel request and parent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from appliance.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ADD COLUMN, not a batch copy of the table: dropping the old jobs table would delete, through their
    # ON DELETE CASCADE, every comparison of its jobs
    op.add_column("jobs", sa.Column("stage", sa.String(length=16), nullable=False, server_default="queued"))
    op.add_column("jobs", sa.Column("deadline", UTCDateTime(), nullable=True))
    op.add_column("jobs", sa.Column("cancel_requested_at", UTCDateTime(), nullable=True))
    op.add_column("jobs", sa.Column("stop_reason", sa.String(length=16), nullable=True))
    op.add_column("jobs", sa.Column("parent_id", sa.String(length=36), nullable=True))
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"])
    op.execute("UPDATE jobs SET stage = 'ended' WHERE state NOT IN ('PENDING', 'STARTED', 'RUNNING')")
    op.create_table(
        "steps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(length=36),
            sa.ForeignKey("jobs.id", name="fk_steps_job_id_jobs", ondelete="CASCADE"),
            nullable=False,
        ),  # fmt: skip
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("runner", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("handle", sa.JSON(), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=128), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("term_sent_at", UTCDateTime(), nullable=True),
        sa.Column("kill_sent_at", UTCDateTime(), nullable=True),
        sa.Column("log_offset", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("job_id", "attempt", "number", name="uq_steps_job_id_attempt_number"),
    )
    op.create_index("ix_steps_runner_state", "steps", ["runner", "state"])


def downgrade() -> None:
    op.drop_index("ix_steps_runner_state", table_name="steps")
    op.drop_table("steps")
    op.execute("UPDATE jobs SET state = 'CANCELED' WHERE state = 'CANCELING'")
    op.drop_index("ix_jobs_parent", table_name="jobs")
    for column in ("parent_id", "stop_reason", "cancel_requested_at", "deadline", "stage"):
        op.drop_column("jobs", column)  # in place (SQLite 3.35+)
