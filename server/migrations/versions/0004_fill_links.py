"""fill links: a violating fill and its violation events are one incident, one review item

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 10:00:00.000000

Adds `fill_links` and an index on events (device_id, occurred_at), then merges the review
items already doubled in the data: every flagged fill is matched to the violations it holds
the way the server matches fills of agents before schema 1.3 (`server.incidents.matches`,
with the default `fill_link_tolerance_s` of this revision). For a fill that repeats a
violation's reason, what reviewers did on the fill (status, claim, reviewed marks) moves onto
the violation's item; the fill's own decisions stay on the fill row and count for the item.
Each link is audited (`incident.link`, actor `migration:0004`) on the chain. Downgrade drops
the links (the fills return to the queue); the moved review state stays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from server.audit import canonical, entry_hash
from server.incidents import matches

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TOLERANCE = timedelta(seconds=1.0)
"""ServerSettings.fill_link_tolerance_s at this revision."""
ACTOR = "migration:0004"
_RANK = {"none": 0, "open": 1, "claimed": 2, "decided": 3}

_events = sa.table(
    "events",
    sa.column("event_id", sa.String),
    sa.column("device_id", sa.String),
    sa.column("kind", sa.String),
    sa.column("reason", sa.String),
    sa.column("flagged", sa.Boolean),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("seq", sa.BigInteger),
    sa.column("body", sa.JSON),
    sa.column("review_status", sa.String),
    sa.column("claimed_by", sa.Integer),
    sa.column("claimed_at", sa.DateTime(timezone=True)),
)
_marks = sa.table(
    "review_marks",
    sa.column("user_id", sa.Integer),
    sa.column("event_id", sa.String),
    sa.column("reviewed_at", sa.DateTime(timezone=True)),
)
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
)
_counters = sa.table(
    "counters", sa.column("name", sa.String), sa.column("value", sa.BigInteger), sa.column("text")
)


def upgrade() -> None:
    links = op.create_table(
        "fill_links",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("violation_id", sa.String(length=36), nullable=False),
        sa.Column("fill_id", sa.String(length=36), nullable=False),
        sa.Column("matched_by", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_fill_links_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["fill_id"], ["events.event_id"], name=op.f("fk_fill_links_fill_id_events")
        ),
        sa.PrimaryKeyConstraint("device_id", "violation_id", name=op.f("pk_fill_links")),
    )
    with op.batch_alter_table("fill_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fill_links_fill_id"), ["fill_id"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_device_time", ["device_id", "occurred_at"], unique=False)
    _merge_doubled_items(op.get_bind(), links)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_device_time")
    with op.batch_alter_table("fill_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fill_links_fill_id"))
    op.drop_table("fill_links")


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _merge_doubled_items(conn: sa.Connection, links: sa.Table) -> None:
    fills = conn.execute(
        sa.select(_events)
        .where(
            _events.c.kind == "station.fill",
            _events.c.flagged.is_(True),
            _events.c.reason != "FILL_OK",
        )
        .order_by(_events.c.occurred_at, _events.c.seq)
    ).all()
    if not fills:
        return
    head = conn.execute(
        sa.select(_counters.c.value, _counters.c.text).where(_counters.c.name == "audit")
    ).one()
    seq, prev = int(head[0]), head[1] or "0" * 64
    now = datetime.now(UTC)
    linked: set[tuple[str, str]] = set()
    for fill in fills:
        payload = fill.body["payload"]
        start = _at(payload["started_at"]) - TOLERANCE
        end = _at(payload.get("ended_at") or fill.body["occurred_at"]) + TOLERANCE
        candidates = conn.execute(
            sa.select(_events)
            .where(
                _events.c.device_id == fill.device_id,
                _events.c.kind == "station.violation",
                _events.c.occurred_at >= start,
                _events.c.occurred_at <= end,
            )
            .order_by(_events.c.occurred_at, _events.c.seq)
        ).all()
        for violation in candidates:
            key = (fill.device_id, violation.event_id)
            if key in linked or not matches(fill.body, violation.body, TOLERANCE):
                continue
            linked.add(key)
            conn.execute(
                sa.insert(links).values(
                    device_id=fill.device_id,
                    violation_id=violation.event_id,
                    fill_id=fill.event_id,
                    matched_by="window",
                    created_at=now,
                )
            )
            folds = violation.reason == fill.reason
            carried = _carry_review(conn, fill, violation) if folds else {}
            seq += 1
            at = datetime.now(UTC).isoformat(timespec="microseconds")
            target = f"event:{violation.event_id}"
            data = canonical(
                {
                    "fill": fill.event_id,
                    "matched_by": "window",
                    "folded": folds,
                    "carried": carried,
                }
            )
            digest = entry_hash(seq, at, ACTOR, "incident.link", target, data, prev)
            conn.execute(
                sa.insert(_audit).values(
                    seq=seq,
                    at=at,
                    actor=ACTOR,
                    action="incident.link",
                    target=target,
                    data=data,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
    conn.execute(
        sa.update(_counters).where(_counters.c.name == "audit").values(value=seq, text=prev)
    )


def _carry_review(conn: sa.Connection, fill: Any, violation: Any) -> dict[str, Any]:
    """Move the fill item's review state onto the violation item (server.incidents does the
    same at ingest)."""
    carried: dict[str, Any] = {}
    values: dict[str, Any] = {}
    if _RANK.get(fill.review_status, 0) > _RANK.get(violation.review_status, 0):
        carried["review_status"] = values["review_status"] = fill.review_status
    if violation.claimed_by is None and fill.claimed_by is not None:
        carried["claimed_by"] = values["claimed_by"] = fill.claimed_by
        values["claimed_at"] = fill.claimed_at
    if values:
        conn.execute(
            sa.update(_events).where(_events.c.event_id == violation.event_id).values(**values)
        )
    have = set(
        conn.scalars(sa.select(_marks.c.user_id).where(_marks.c.event_id == violation.event_id))
    )
    moved = []
    for user_id, reviewed_at in conn.execute(
        sa.select(_marks.c.user_id, _marks.c.reviewed_at).where(_marks.c.event_id == fill.event_id)
    ).all():
        if user_id not in have:
            conn.execute(
                sa.insert(_marks).values(
                    user_id=user_id, event_id=violation.event_id, reviewed_at=reviewed_at
                )
            )
            moved.append(user_id)
    if moved:
        carried["reviewed_by"] = moved
    return carried
