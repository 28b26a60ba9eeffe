"""keyed audit chain: every audit row and every event row sealed with the audit key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:30:00.000000

Adds `audit_log.mac` and `events.mac` (HMAC-SHA256 under the audit key, `server.audit`). Rows
already stored are sealed as they are, after the old unkeyed chain has been walked: what that
walk found (it should be nothing) is written into the `audit.seal` entry this migration
appends (actor `migration:0007`) and logged, so the sealing never hides an earlier break.
Sealing needs the audit key: run through `jifang server migrate` or the server, which pass it
(`server.migrate.upgrade(..., audit_key=...)`). An empty database needs no key. Downgrade
drops the seals (the chain is plain SHA-256 again).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from server.audit import GENESIS, AuditKey, canonical, entry_hash, entry_mac, event_mac
from server.migrate import AUDIT_KEY_ATTRIBUTE

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

logger = logging.getLogger(__name__)

ACTOR = "migration:0007"
PAGE = 1000
PROBLEMS_KEPT = 100
"""How many breaks of the old chain the seal entry lists (the count is always complete)."""

_audit = sa.table(
    "audit_log",
    sa.column("seq", sa.BigInteger),
    sa.column("at", sa.String),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("data", sa.Text),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
    sa.column("mac", sa.String),
)
_events = sa.table(
    "events",
    sa.column("event_id", sa.String),
    sa.column("device_id", sa.String),
    sa.column("site_id", sa.String),
    sa.column("seq", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("reason", sa.String),
    sa.column("severity", sa.String),
    sa.column("flagged", sa.Boolean),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("body", sa.JSON),
    sa.column("batch_audit_seq", sa.BigInteger),
    sa.column("mac", sa.String),
)
_counters = sa.table(
    "counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger), sa.column("text")
)


def upgrade() -> None:
    conn = op.get_bind()
    stored = conn.execute(sa.select(_audit.c.seq).limit(1)).first() is not None or (
        conn.execute(sa.select(_events.c.event_id).limit(1)).first() is not None
    )
    key = context.config.attributes.get(AUDIT_KEY_ATTRIBUTE)
    # Checked before any DDL: SQLite does not roll an ALTER TABLE back.
    if stored and not isinstance(key, AuditKey):
        raise RuntimeError(
            "migration 0007 seals the audit rows and events already stored with the audit "
            "key: run it with `jifang server migrate` (or start the server), which loads "
            "JIFANG_AUDIT_KEY / JIFANG_AUDIT_KEY_FILE or creates the key"
        )
    for table in ("audit_log", "events"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("mac", sa.String(length=64), nullable=False, server_default="")
            )
    if stored and isinstance(key, AuditKey):
        _seal(conn, key)


def downgrade() -> None:
    for table in ("events", "audit_log"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("mac")


def _seal(conn: sa.Connection, key: AuditKey) -> None:
    problems, rows, head = _seal_audit_rows(conn, key)
    events = _seal_events(conn, key)
    if problems:
        logger.warning(
            "the audit chain had %d break(s) before it was sealed: %s", len(problems), problems[:5]
        )
    counter = conn.execute(
        sa.select(_counters.c.value, _counters.c.text).where(_counters.c.name == "audit")
    ).one()
    seq, prev = int(counter[0]) + 1, counter[1] or GENESIS
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    target = "audit:chain"
    data = canonical(
        {
            "rows_sealed": rows,
            "events_sealed": events,
            "head_before": head,
            "audit_key_id": key.key_id,
            "breaks_before": len(problems),
            "breaks": problems[:PROBLEMS_KEPT],
        }
    )
    digest = entry_hash(seq, at, ACTOR, "audit.seal", target, data, prev)
    conn.execute(
        sa.insert(_audit).values(
            seq=seq,
            at=at,
            actor=ACTOR,
            action="audit.seal",
            target=target,
            data=data,
            prev_hash=prev,
            hash=digest,
            mac=entry_mac(key, seq, digest),
        )
    )
    conn.execute(
        sa.update(_counters).where(_counters.c.name == "audit").values(value=seq, text=digest)
    )


def _seal_audit_rows(conn: sa.Connection, key: AuditKey) -> tuple[list[str], int, str]:
    """Walk the unkeyed chain (recording its breaks) and seal every row."""
    problems: list[str] = []
    prev_seq, prev_hash, sealed = 0, GENESIS, 0
    seal = (
        sa.update(_audit)
        .where(_audit.c.seq == sa.bindparam("b_seq"))
        .values(mac=sa.bindparam("b_mac"))
    )
    while True:
        page = conn.execute(
            sa.select(_audit).where(_audit.c.seq > prev_seq).order_by(_audit.c.seq).limit(PAGE)
        ).all()
        if not page:
            break
        for row in page:
            if row.seq != prev_seq + 1:
                problems.append(f"audit row {prev_seq + 1}: deleted (rows up to {row.seq - 1})")
            expected = entry_hash(
                row.seq, row.at, row.actor, row.action, row.target, row.data, row.prev_hash
            )
            if expected != row.hash:
                problems.append(f"audit row {row.seq}: edited")
            elif row.prev_hash != prev_hash:
                problems.append(f"audit row {row.seq}: inserted or re-linked")
            prev_seq, prev_hash = row.seq, row.hash
        conn.execute(seal, [{"b_seq": r.seq, "b_mac": entry_mac(key, r.seq, r.hash)} for r in page])
        sealed += len(page)
    return problems, sealed, prev_hash


def _seal_events(conn: sa.Connection, key: AuditKey) -> int:
    seal = (
        sa.update(_events)
        .where(_events.c.event_id == sa.bindparam("b_id"))
        .values(mac=sa.bindparam("b_mac"))
    )
    last, sealed = "", 0
    while True:
        page = conn.execute(
            sa.select(_events)
            .where(_events.c.event_id > last)
            .order_by(_events.c.event_id)
            .limit(PAGE)
        ).all()
        if not page:
            return sealed
        conn.execute(
            seal, [{"b_id": r.event_id, "b_mac": event_mac(key, r._mapping)} for r in page]
        )
        sealed += len(page)
        last = page[-1].event_id
