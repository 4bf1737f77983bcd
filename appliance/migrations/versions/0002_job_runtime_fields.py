"""job runtime fields: options, dates, exit code, cores, wall time, attempts, runner handle, queue task; a job keeps
its products when its input file is deleted

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:36:53.820600
"""

import sqlalchemy as sa
from alembic import op

import appliance.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# 0001 created the jobs -> files foreign key without a name; this names it so that it can be replaced
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    with op.batch_alter_table("jobs", naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column("data_inputs", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("start_date", appliance.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("end_date", appliance.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cores", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("walltime", sa.Float(), nullable=False, server_default="21600"))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("runner", sa.String(length=64), nullable=False, server_default="local"))
        batch_op.add_column(sa.Column("handle", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("task_id", sa.String(length=64), nullable=True))
        batch_op.alter_column("file_uuid", existing_type=sa.String(length=32), nullable=True)
        batch_op.create_index("ix_jobs_state", ["state"], unique=False)
        batch_op.drop_constraint("fk_jobs_file_uuid_files", type_="foreignkey")
        batch_op.create_foreign_key("fk_jobs_file_uuid_files", "files", ["file_uuid"], ["uuid"], ondelete="SET NULL")
    op.execute("UPDATE jobs SET data_inputs = file_uuid WHERE data_inputs = ''")
    with op.batch_alter_table("jobs") as batch_op:
        for column, kind in (
            ("data_inputs", sa.String(length=64)),
            ("options", sa.JSON()),
            ("cores", sa.Integer()),
            ("walltime", sa.Float()),
            ("attempts", sa.Integer()),
            ("runner", sa.String(length=64)),
            ("pid", sa.String(length=64)),
        ):
            batch_op.alter_column(column, existing_type=kind, server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE file_uuid IS NULL")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_constraint("fk_jobs_file_uuid_files", type_="foreignkey")
        batch_op.create_foreign_key("fk_jobs_file_uuid_files", "files", ["file_uuid"], ["uuid"], ondelete="RESTRICT")
        batch_op.drop_index("ix_jobs_state")
        batch_op.alter_column("file_uuid", existing_type=sa.String(length=32), nullable=False)
        for column in (
            "task_id",
            "pid",
            "handle",
            "runner",
            "attempts",
            "walltime",
            "cores",
            "exit_code",
            "end_date",
            "start_date",
            "options",
            "data_inputs",
        ):
            batch_op.drop_column(column)
