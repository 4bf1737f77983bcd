"""comparisons with an uploaded catalog: job_b may be null

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.alter_column("job_b", existing_type=sa.String(length=36), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM comparisons WHERE job_b IS NULL")
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.alter_column("job_b", existing_type=sa.String(length=36), nullable=False)
