"""certificate expiry index (the gallery's expiry sweep looks up valid, overdue certificates)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 02:32:25.806470
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_status_expiry", "certificates", ["status", "expiry_date"])


def downgrade() -> None:
    op.drop_index("ix_certificates_status_expiry", table_name="certificates")
