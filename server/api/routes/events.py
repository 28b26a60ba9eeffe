"""Signed event batches and content-addressed evidence uploads from devices."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request, Response
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contract.codes import EventKind, ReasonCode
from contract.messages import Event, EventBatch, EventBatchAck
from server import audit
from server.api.body import BodyDep
from server.api.deps import DeviceDep, ReviewerDep, SessionDep, SettingsDep, own_device
from server.bundle import BundleError, build, evidence_path
from server.evidence import StorageError, StorageFull, is_intact, write_atomic
from server.incidents import LinkWindow
from server.ingest import ingest
from server.settings import ServerSettings
from server.tables import Evidence
from server.templates import capture_from_start

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["events"])

_MAGIC = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",)}


@router.post("/events", response_model=EventBatchAck)
def post_events(
    principal: DeviceDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    body: BodyDep,
) -> Response:
    """Store a device's batch; replays are acknowledged as duplicates and create nothing;
    an id another device used, or the same id with other content, is rejected."""
    try:
        batch = EventBatch.model_validate_json(body)
    except ValidationError as err:
        # Name the fields and why, never echo what was sent.
        errors = err.errors(include_url=False, include_input=False, include_context=False)
        raise HTTPException(422, f"invalid event batch: {errors[:5]}") from err
    device = own_device(principal, batch.device_id)
    if len(batch.events) > settings.max_batch_events:
        raise HTTPException(413, "too many events in one batch")
    metrics = request.app.state.metrics
    for attempt in range(2):
        try:
            result = ingest(session, device, batch, body, LinkWindow.from_settings(settings))
            session.commit()
            break
        except IntegrityError:
            # Another request stored some of these ids first; the retry sees them as duplicates.
            session.rollback()
            if attempt:
                raise HTTPException(409, "concurrent delivery of the same events") from None
    if settings.template_capture and result.ack.accepted:
        accepted = {str(i) for i in result.ack.accepted}
        starts = [
            e
            for e in batch.events
            if str(e.event_id) in accepted
            and e.kind == EventKind.CAB_DECISION
            and e.reason == ReasonCode.AUTHORIZED
        ]
        if starts:
            _capture(session, request, settings, starts)
    for kind, flagged, severity in result.stored:
        metrics.ingested.labels(kind).inc()
        if flagged:
            metrics.flagged.labels(severity).inc()
    if result.ack.duplicates:
        metrics.duplicates.inc(len(result.ack.duplicates))
    # `rejected` only when there is something in it: agents before it knew the field refuse
    # unknown keys, and they only meet it on a conflict (which they then keep and retry).
    exclude = None if result.ack.rejected else {"rejected"}
    return Response(result.ack.model_dump_json(exclude=exclude), media_type="application/json")


def _capture(
    session: Session, request: Request, settings: ServerSettings, starts: Sequence[Event]
) -> None:
    """Templates from the batch's authorized starts, each in its own transaction; a failure
    is logged and never undoes the acknowledged events."""
    for event in starts:
        try:
            capture_from_start(
                session,
                request.app.state.faces,
                event,
                settings.evidence_dir,
                settings.enroll_max_templates,
            )
            session.commit()
        except Exception:  # a template is a bonus: the events are already stored
            session.rollback()
            logger.exception("template capture from start %s failed", event.event_id)


@router.put("/evidence/{sha256}", status_code=201)
def put_evidence(
    principal: DeviceDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    body: BodyDep,
    sha256: str = Path(pattern=r"^[0-9a-f]{64}$"),
) -> Response:
    """Store an image under its SHA-256; 200 when already stored intact. A stored file that is
    missing or damaged is replaced by the (verified) upload and answered 201."""
    assert principal.device is not None  # DeviceDep
    if len(body) > settings.evidence_max_bytes:
        raise HTTPException(413, "evidence too large")
    if hashlib.sha256(body).hexdigest() != sha256:
        raise HTTPException(400, "evidence hash mismatch")
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type not in _MAGIC or not body.startswith(_MAGIC[media_type]):
        raise HTTPException(415, "evidence must be a JPEG or PNG image")
    path = evidence_path(settings.evidence_dir, sha256)
    known = session.get(Evidence, sha256) is not None
    if known and is_intact(path, sha256):
        return Response(status_code=200)
    try:
        write_atomic(path, body)
    except StorageFull as err:
        logger.error("evidence %s not stored: %s", sha256[:12], err)
        raise HTTPException(507, "evidence storage full") from err
    except StorageError as err:
        logger.error("evidence %s not stored: %s", sha256[:12], err)
        raise HTTPException(503, "evidence storage unavailable") from err
    if known:
        audit.append(
            session,
            principal.actor,
            "evidence.repair",
            f"evidence:{sha256}",
            {"media_type": media_type, "size": len(body)},
        )
        session.commit()
        logger.warning("evidence %s was missing or damaged: replaced by the upload", sha256[:12])
        return Response(status_code=201)
    session.add(
        Evidence(
            sha256=sha256,
            media_type=media_type,
            size=len(body),
            device_id=principal.device.id,
            stored_at=datetime.now(UTC),
        )
    )
    audit.append(
        session,
        principal.actor,
        "evidence.store",
        f"evidence:{sha256}",
        {"media_type": media_type, "size": len(body)},
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return Response(status_code=200)
    return Response(status_code=201)


@router.get("/events/{event_id}/bundle")
def event_bundle(
    event_id: str, principal: ReviewerDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """The signed, offline-verifiable bundle of one event."""
    settings = request.app.state.settings
    try:
        return build(session, event_id, settings.evidence_dir, request.app.state.server_key)
    except BundleError as err:
        raise HTTPException(404, "event not found") from err
