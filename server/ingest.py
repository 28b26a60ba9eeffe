"""Event ingestion: idempotent by event id and content, conflicts rejected and audited,
sequence gaps recorded, events classified."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from contract.codes import EventKind
from contract.messages import Event as WireEvent
from contract.messages import EventBatch, EventBatchAck, EventRejection
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


def content_hash(body: dict[str, Any]) -> str:
    """SHA-256 of an event's canonical JSON (`Event.model_dump(mode="json")`)."""
    return hashlib.sha256(audit.canonical(body).encode("utf-8")).hexdigest()


def _sort_out(
    session: Session, device_id: str, batch: EventBatch
) -> tuple[list[WireEvent], list[uuid.UUID], list[EventRejection]]:
    """Split the batch into new events, true duplicates (same device, same content) and
    conflicts (an id another device used, or this device's id with other content)."""
    ids = [str(e.event_id) for e in batch.events]
    stored: dict[str, tuple[str, str]] = {}
    for start in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(Event.event_id, Event.device_id, Event.content_sha256, Event.body).where(
                Event.event_id.in_(ids[start : start + _CHUNK])
            )
        )
        for event_id, owner, digest, stored_body in rows:
            stored[event_id] = (owner, digest or content_hash(stored_body))
    fresh: list[WireEvent] = []
    duplicates: list[uuid.UUID] = []
    rejected: list[EventRejection] = []
    for event, event_id in zip(batch.events, ids, strict=True):
        digest = content_hash(event.model_dump(mode="json"))
        known = stored.get(event_id)
        if known is None:
            stored[event_id] = (device_id, digest)
            fresh.append(event)
        elif known[0] != device_id:
            rejected.append(EventRejection(event_id=event.event_id, reason="event_id_taken"))
        elif known[1] != digest:
            rejected.append(EventRejection(event_id=event.event_id, reason="content_differs"))
        else:
            duplicates.append(event.event_id)
    return fresh, duplicates, rejected


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
    fresh, duplicates, rejected = _sort_out(session, device.id, batch)
    if rejected:
        audit.append(
            session,
            f"device:{device.id}",
            "events.reject",
            f"device:{device.id}",
            {
                "rejected": [{"event_id": str(r.event_id), "reason": r.reason} for r in rejected],
                "batch_sha256": hashlib.sha256(body).hexdigest(),
            },
        )
        logger.warning("device %s sent %d conflicting event id(s)", device.id, len(rejected))
    if not fresh:
        return IngestResult(
            EventBatchAck(duplicates=tuple(duplicates), rejected=tuple(rejected)), []
        )

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
                "content_sha256": content_hash(event.model_dump(mode="json")),
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
        rejected=tuple(rejected),
    )
    return IngestResult(ack, stored)
