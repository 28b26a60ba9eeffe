"""event content hash: a resent event id with other content is a conflict, not a duplicate

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 01:00:00.000000

Adds `events.content_sha256` (nullable). Rows stored before this revision keep NULL; ingest
hashes their stored body when the same id arrives again (`server.ingest.content_hash`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("content_sha256")
