"""Migration 0004 on a database built at 0003 with review items doubled the old way, and 0007
sealing the audit chain and the events already stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from contract.codes import ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    StationFillEvent,
    StationFillPayload,
    StationViolationEvent,
    StationViolationPayload,
)
from server import audit, incidents, review
from server.db import make_engine
from server.domain import classify
from server.migrate import alembic_config, current_revision, upgrade
from server.settings import ServerSettings
from server.tables import (
    AuditEntry,
    Counter,
    Decision,
    Device,
    Enterprise,
    Event,
    FillLink,
    ReviewMark,
    Site,
    User,
)
from tests.server.helpers import denied_event

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
DEVICE = "station-01"


def _old_body(event: Any) -> dict[str, Any]:
    """The body a 0003 server stored: schema 1.1, no violation_ids."""
    body: dict[str, Any] = json.loads(event.model_dump_json())
    body["schema_version"] = "1.1"
    body["payload"].pop("violation_ids", None)
    return body


def _violation(seq: int, at_s: float, reason: ReasonCode, scale: str) -> StationViolationEvent:
    return StationViolationEvent(
        event_id=uuid7(),
        device_id=DEVICE,
        seq=seq,
        occurred_at=START + timedelta(seconds=at_s),
        reason=reason,
        severity=Severity.CRITICAL,
        payload=StationViolationPayload(scale_id=scale, cylinder_code="CYL-0001"),
    )


def _fill(seq: int, reason: ReasonCode, scale: str, start_s: float, end_s: float) -> Any:
    return StationFillEvent(
        event_id=uuid7(),
        device_id=DEVICE,
        seq=seq,
        occurred_at=START + timedelta(seconds=end_s),
        reason=reason,
        severity=Severity.CRITICAL if reason != ReasonCode.FILL_OK else Severity.INFO,
        payload=StationFillPayload(
            scale_id=scale,
            cylinder_code="CYL-0001",
            net_kg=16.2,
            rated_fill_kg=14.5,
            started_at=START + timedelta(seconds=start_s),
            ended_at=START + timedelta(seconds=end_s),
        ),
    )


_EVENTS = cast(Table, Event.__table__)


def _store(session: Session, event: Any, batch_seq: int, status: str | None = None) -> str:
    """Insert the event as a 0003 server did: Core, with 0003's columns only (the ORM class
    carries columns of later revisions)."""
    body = _old_body(event) if event.kind.startswith("station.") else event.model_dump(mode="json")
    flagged, severity = classify(event.kind, event.reason, event.severity)
    session.execute(
        insert(_EVENTS).values(
            event_id=str(event.event_id),
            device_id=event.device_id,
            site_id="site-1",
            seq=event.seq,
            kind=str(event.kind),
            reason=str(event.reason),
            severity=str(severity),
            flagged=flagged,
            occurred_at=event.occurred_at,
            received_at=event.occurred_at,
            body=body,
            review_status=status or ("open" if flagged else "none"),
            batch_audit_seq=batch_seq,
        )
    )
    return str(event.event_id)


def _legacy_append(session: Session, actor: str, action: str, target: str, data: Any) -> int:
    """An audit row the way servers before 0007 wrote it: hashed, not sealed."""
    seq, prev = session.execute(
        select(Counter.value, Counter.text).where(Counter.name == audit.AUDIT_COUNTER)
    ).one()
    seq, prev = int(seq) + 1, prev or audit.GENESIS
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    text = audit.canonical(data)
    digest = audit.entry_hash(seq, at, actor, action, target, text, prev)
    columns = AuditEntry.__table__.c
    session.execute(
        insert(AuditEntry.__table__).values(
            {
                columns.seq: seq,
                columns.at: at,
                columns.actor: actor,
                columns.action: action,
                columns.target: target,
                columns.data: text,
                columns.prev_hash: prev,
                columns.hash: digest,
            }
        )
    )
    session.execute(
        update(Counter).where(Counter.name == audit.AUDIT_COUNTER).values(value=seq, text=digest)
    )
    return seq


def _decide(session: Session, event_id: str, user: User, outcome: str) -> Decision:
    decision = Decision(
        event_id=event_id,
        user_id=user.id,
        outcome=outcome,
        comment="",
        supersedes=None,
        decided_at=datetime.now(UTC),
    )
    session.add(decision)
    session.flush()
    _legacy_append(
        session,
        f"user:{user.username}",
        "review.decision",
        f"event:{event_id}",
        {"decision_id": decision.id, "outcome": outcome},
    )
    return decision


def test_0004_merges_doubled_items_and_0007_seals_everything(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0003")
    assert current_revision(engine) == "0003"
    now = datetime.now(UTC)
    over = _violation(0, 25.0, ReasonCode.OVERFILL, "S101")
    over_fill = _fill(1, ReasonCode.OVERFILL, "S101", 3.0, 25.0)
    unscanned = _violation(2, 40.0, ReasonCode.UNSCANNED_FILL, "S102")
    unscanned_fill = _fill(3, ReasonCode.UNSCANNED_FILL, "S102", 40.0, 62.0)
    apart = _violation(4, 50.0, ReasonCode.OVERFILL, "S103")  # no fill on that scale
    clean = _fill(5, ReasonCode.FILL_OK, "S104", 3.0, 25.0)
    cab = denied_event("crane-01", 0)
    with Session(engine) as session:
        session.add(Enterprise(id="ent-1", name="济南重工", credit_code=""))
        session.flush()
        session.add(Site(id="site-1", enterprise_id="ent-1", name="一号厂区", address=""))
        session.flush()
        for device_id, kind in ((DEVICE, "filling_station"), ("crane-01", "crane")):
            session.add(
                Device(
                    id=device_id,
                    kind=kind,
                    site_id="site-1",
                    key=b"k" * 32,
                    accepted_categories=[],
                    created_at=now,
                )
            )
        reviewer = User(username="supervisor", password_hash="x", role="supervisor", created_at=now)
        session.add(reviewer)
        session.flush()
        everything = (over, over_fill, unscanned, unscanned_fill, apart, clean, cab)
        batch = _legacy_append(
            session,
            f"device:{DEVICE}",
            "events.ingest",
            f"device:{DEVICE}",
            {"event_ids": [str(e.event_id) for e in everything]},
        )
        for e in everything:
            _store(session, e, batch)
        session.flush()
        events = _EVENTS
        # The old queue showed the overfill twice; a reviewer worked the fill's copy.
        session.execute(
            update(events)
            .where(events.c.event_id == str(over_fill.event_id))
            .values(review_status="decided", claimed_by=reviewer.id, claimed_at=now)
        )
        fill_decision = _decide(
            session, str(over_fill.event_id), reviewer, "confirmed_violation"
        ).id
        session.add(
            ReviewMark(user_id=reviewer.id, event_id=str(over_fill.event_id), reviewed_at=now)
        )
        # The unscanned fill was decided on its violation's copy instead.
        session.execute(
            update(events)
            .where(events.c.event_id == str(unscanned.event_id))
            .values(review_status="decided")
        )
        _decide(session, str(unscanned.event_id), reviewer, "false_alarm")
        session.commit()
        events_before = session.scalar(select(func.count()).select_from(Event))
        decisions_before = session.scalar(select(func.count()).select_from(Decision))

    upgrade(engine, "0004")
    assert current_revision(engine) == "0004"
    with engine.connect() as conn:
        head_before = conn.execute(
            select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
        ).one()
    # 0007 refuses to run without the key, then seals every row and event as it is.
    upgrade(engine, "0006")
    with pytest.raises(RuntimeError, match="migration 0007 seals the audit rows"):
        upgrade(engine)
    assert current_revision(engine) == "0006"
    key = audit.ensure_key(ServerSettings(data_dir=tmp_path / "data", database_url=db_url))
    upgrade(engine, audit_key=key)
    assert current_revision(engine) == "0007"
    with Session(engine, info=audit.session_info(key)) as session:
        items = review.queue(session, review.QueueFilter(), 100)
        assert {e.event_id for e in items} == {
            str(over.event_id),
            str(unscanned.event_id),
            str(apart.event_id),
            str(cab.event_id),
        }
        assert review.queue_counts(session, review.QueueFilter())["total"] == 4
        links = {
            (lk.violation_id, lk.fill_id, lk.matched_by) for lk in session.scalars(select(FillLink))
        }
        assert links == {
            (str(over.event_id), str(over_fill.event_id), "window"),
            (str(unscanned.event_id), str(unscanned_fill.event_id), "window"),
        }
        # Nothing lost: every event and decision is still there, the fill row untouched.
        assert session.scalar(select(func.count()).select_from(Event)) == events_before
        assert session.scalar(select(func.count()).select_from(Decision)) == decisions_before
        fill_row = session.get(Event, str(over_fill.event_id))
        assert fill_row is not None and fill_row.flagged and fill_row.review_status == "decided"
        assert session.get(ReviewMark, (fill_row.claimed_by, fill_row.event_id)) is not None
        # The item took the review done on the fill's copy.
        item = session.get(Event, str(over.event_id))
        assert item is not None
        assert item.review_status == "decided" and item.claimed_by == fill_row.claimed_by
        assert session.get(ReviewMark, (fill_row.claimed_by, item.event_id)) is not None
        assert [d.id for d in review.decisions(session, item)] == [fill_decision]
        assert review.latest_outcome(session, item) == "confirmed_violation"
        other = session.get(Event, str(unscanned.event_id))
        assert other is not None and review.latest_outcome(session, other) == "false_alarm"
        assert incidents.incident_ids(session, other) == [
            str(unscanned.event_id),
            str(unscanned_fill.event_id),
        ]
        # Each link is on the audit chain, which still verifies.
        linked = list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "incident.link"))
        )
        assert {e.target for e in linked} == {
            f"event:{over.event_id}",
            f"event:{unscanned.event_id}",
        }
        assert {e.actor for e in linked} == {"migration:0004"}
        carried = {e.target: json.loads(e.data)["carried"] for e in linked}
        assert carried[f"event:{over.event_id}"] == {
            "review_status": "decided",
            "claimed_by": fill_row.claimed_by,
            "reviewed_by": [fill_row.claimed_by],
        }
        assert carried[f"event:{unscanned.event_id}"] == {}
        assert audit.verify(session) == []
        seal = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
        assert seal is not None and seal.action == "audit.seal"
        assert seal.actor == "migration:0007" and seal.seq == head_before[0] + 1
        record = json.loads(seal.data)
        assert record["rows_sealed"] == head_before[0]
        assert record["events_sealed"] == events_before
        assert record["head_before"] == head_before[1] and record["breaks_before"] == 0
        # Sealed rows are guarded now: an edit of a migrated event is named.
        session.execute(
            update(Event).where(Event.event_id == str(cab.event_id)).values(reason="AUTHORIZED")
        )
        assert [str(p) for p in audit.verify(session)] == [
            f"event {cab.event_id} (device crane-01, seq 0): edited (its contents do not match "
            f"the seal made when audit row {batch} stored it)"
        ]
        session.rollback()
    engine.dispose()


def test_0007_records_an_old_break_when_it_seals(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0004")
    with Session(engine) as session:
        for n in range(3):
            _legacy_append(session, "cli", "user.create", f"user:u{n}", {"role": "supervisor"})
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(actor="mallory"))
        session.commit()
    key = audit.ensure_key(ServerSettings(data_dir=tmp_path / "data", database_url=db_url))
    upgrade(engine, audit_key=key)
    with Session(engine, info=audit.session_info(key)) as session:
        seal = session.get(AuditEntry, 4)
        assert seal is not None and seal.action == "audit.seal"
        assert json.loads(seal.data)["breaks"] == ["audit row 2: edited"]
    engine.dispose()


def test_0004_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    command.downgrade(alembic_config(engine), "0003")
    assert current_revision(engine) == "0003"
    upgrade(engine, "0004")
    assert current_revision(engine) == "0004"
    upgrade(engine)
    assert current_revision(engine) == "0007"
    engine.dispose()


def test_0005_adds_the_event_content_hash_and_downgrades(db_url: str) -> None:
    from sqlalchemy import inspect as schema_of

    engine = make_engine(db_url)
    upgrade(engine, "0004")
    assert "content_sha256" not in {c["name"] for c in schema_of(engine).get_columns("events")}
    upgrade(engine, "0005")
    assert "content_sha256" in {c["name"] for c in schema_of(engine).get_columns("events")}
    command.downgrade(alembic_config(engine), "0004")
    assert "content_sha256" not in {c["name"] for c in schema_of(engine).get_columns("events")}
    engine.dispose()
