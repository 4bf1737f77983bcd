"""files and jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:54:33.201335
"""

import sqlalchemy as sa
from alembic import op

import appliance.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("uuid", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("filename_orig", sa.String(length=255), nullable=False),
        sa.Column("fileext", sa.String(length=16), nullable=False),
        sa.Column("relpath", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created", appliance.models.UTCDateTime(), nullable=False),
        sa.Column("tag", sa.String(length=256), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("relpath"),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_user_created", ["user", "created"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("file_uuid", sa.String(length=32), nullable=False),
        sa.Column("job_inputs", sa.JSON(), nullable=False),
        sa.Column("tag", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("submit_date", appliance.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["file_uuid"], ["files.uuid"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_file_state", ["file_uuid", "state"], unique=False)
        batch_op.create_index("ix_jobs_user_submit", ["user", "submit_date"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_user_submit")
        batch_op.drop_index("ix_jobs_file_state")

    op.drop_table("jobs")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_user_created")

    op.drop_table("files")
