"""Event ingestion: idempotent by event id, sequence gaps recorded, events classified."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from contract.codes import EventKind
from contract.messages import EventBatch, EventBatchAck
from contract.messages import SequenceGap as GapMessage
from server import audit, incidents
from server.db import insert_rows
from server.domain import ReviewStatus, classify
from server.tables import Device, Event, SequenceGap

logger = logging.getLogger(__name__)

_CHUNK = 500


@dataclass(frozen=True)
class IngestResult:
    """The acknowledgement and what the metrics need."""

    ack: EventBatchAck
    stored: list[tuple[str, bool, str]]
    """(kind, flagged, severity) of each stored event."""


_STATION_KINDS = (EventKind.STATION_FILL, EventKind.STATION_VIOLATION)


def ingest(
    session: Session,
    device: Device,
    batch: EventBatch,
    body: bytes,
    window: incidents.LinkWindow,
) -> IngestResult:
    """Store the batch's new events in the caller's transaction and say what happened.

    Station fills and violations are linked into incidents (`server/incidents.py`).
    """
    ids = [str(e.event_id) for e in batch.events]
    existing: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        existing.update(
            session.scalars(
                select(Event.event_id).where(Event.event_id.in_(ids[start : start + _CHUNK]))
            )
        )
    seen: set[str] = set()
    fresh = []
    duplicates = []
    for event, event_id in zip(batch.events, ids, strict=True):
        if event_id in existing or event_id in seen:
            duplicates.append(event.event_id)
            continue
        seen.add(event_id)
        fresh.append(event)
    if not fresh:
        return IngestResult(EventBatchAck(duplicates=tuple(duplicates)), [])

    # Lock the device row so concurrent batches of one device see each other's last_seq.
    last_seq = session.execute(
        update(Device)
        .where(Device.id == device.id)
        .values(last_seen_at=datetime.now(UTC))
        .returning(Device.last_seq)
    ).scalar_one()
    gaps: list[GapMessage] = []
    expected = None if last_seq is None else last_seq + 1
    for seq in sorted({e.seq for e in fresh}):
        if expected is not None and seq > expected:
            gaps.append(GapMessage(first_missing=expected, last_missing=seq - 1))
        if expected is None or seq >= expected:
            expected = seq + 1
    assert expected is not None  # fresh is not empty
    new_last = max(expected - 1, last_seq if last_seq is not None else -1)

    now = datetime.now(UTC)
    rows = []
    stored = []
    for event in fresh:
        flagged, severity = classify(event.kind, event.reason, event.severity)
        rows.append(
            {
                "event_id": str(event.event_id),
                "device_id": device.id,
                "site_id": device.site_id,
                "seq": event.seq,
                "kind": str(event.kind),
                "reason": str(event.reason),
                "severity": str(severity),
                "flagged": flagged,
                "occurred_at": event.occurred_at,
                "received_at": now,
                "body": event.model_dump(mode="json"),
                "review_status": ReviewStatus.OPEN if flagged else ReviewStatus.NONE,
                "claimed_by": None,
                "claimed_at": None,
                "batch_audit_seq": None,
            }
        )
        stored.append((str(event.kind), flagged, str(severity)))
    entry = audit.append(
        session,
        f"device:{device.id}",
        "events.ingest",
        f"device:{device.id}",
        {
            "event_ids": [str(e.event_id) for e in fresh],
            "batch_sha256": hashlib.sha256(body).hexdigest(),
            "gaps": [g.model_dump() for g in gaps],
            "events_sha256": audit.events_digest(rows),
        },
    )
    audit.seal_events(session, rows, entry.seq)
    insert_rows(session, Event, rows)
    if gaps:
        session.execute(
            insert(SequenceGap),
            [
                {
                    "device_id": device.id,
                    "first_missing": g.first_missing,
                    "last_missing": g.last_missing,
                    "detected_at": now,
                }
                for g in gaps
            ],
        )
        logger.warning("device %s skipped sequence numbers %s", device.id, gaps)
    session.execute(update(Device).where(Device.id == device.id).values(last_seq=new_last))
    station = [str(e.event_id) for e in fresh if e.kind in _STATION_KINDS]
    if station:
        incidents.link_new_events(session, device.id, station, window, now)
    ack = EventBatchAck(
        accepted=tuple(e.event_id for e in fresh),
        duplicates=tuple(duplicates),
        gaps=tuple(gaps),
    )
    return IngestResult(ack, stored)
