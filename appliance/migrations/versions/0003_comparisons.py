"""comparisons

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:29:20.303711
"""

import sqlalchemy as sa
from alembic import op

import appliance.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("job_a", sa.String(length=36), nullable=False),
        sa.Column("job_b", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("radius_arcsec", sa.Float(), nullable=False),
        sa.Column("created", appliance.models.UTCDateTime(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["job_a"], ["jobs.id"], name=op.f("fk_comparisons_job_a_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_b"], ["jobs.id"], name=op.f("fk_comparisons_job_b_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.create_index("ix_comparisons_user_created", ["user", "created"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.drop_index("ix_comparisons_user_created")

    op.drop_table("comparisons")
