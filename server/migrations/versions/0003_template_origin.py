"""template origin and source event (templates as a managed resource)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 13:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("origin", sa.String(length=16), server_default="certificate", nullable=False)
        )
        batch_op.add_column(sa.Column("event_id", sa.String(length=36), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_templates_event_id"), ["event_id"])


def downgrade() -> None:
    with op.batch_alter_table("templates", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_templates_event_id"), type_="unique")
        batch_op.drop_column("event_id")
        batch_op.drop_column("origin")
