"""Signed event ingestion over real HTTP: idempotence, device keys, gaps, classification, evidence."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
from sqlalchemy import func, select

from contract.messages import EventBatchAck
from server.tables import Event, Evidence, SequenceGap
from tests.server.conftest import World
from tests.server.helpers import (
    DeviceClient,
    authorized_event,
    batch_of,
    denied_event,
    violation_event,
)


def _events(world: World) -> int:
    with world.app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_a_replayed_batch_adds_nothing(world: World) -> None:
    batch = batch_of("crane-01", [authorized_event("crane-01", 1), denied_event("crane-01", 2)])
    first = world.crane.post_batch(batch)
    assert first.status_code == 200, first.text
    ack = EventBatchAck.model_validate_json(first.text)
    assert len(ack.accepted) == 2 and ack.duplicates == ()
    again = EventBatchAck.model_validate_json(world.crane.post_batch(batch).text)
    assert again.accepted == ()
    assert set(again.duplicates) == {e.event_id for e in batch.events}
    assert _events(world) == 2
    metrics = world.call("admin", "GET", "/metrics").text
    assert 'jifang_events_ingested_total{kind="cab.decision"} 2.0' in metrics
    assert "jifang_events_duplicate_total 2.0" in metrics


def test_an_event_signed_with_another_devices_key_is_refused(world: World) -> None:
    batch = batch_of("crane-01", [denied_event("crane-01", 1)])
    # The forklift's key, but claiming to be the crane.
    impostor = DeviceClient(world.http, "crane-01", world.forklift.key_hex)
    response = impostor.post_batch(batch)
    assert response.status_code == 401
    assert response.json()["detail"] == "device signature invalid"
    # Signed correctly by the forklift, but carrying the crane's events.
    own_key = world.forklift.post_batch(batch)
    assert own_key.status_code == 403
    assert own_key.json()["detail"] == "device may only use its own id"
    assert _events(world) == 0


def test_tampered_body_and_stale_timestamp_are_refused(world: World) -> None:
    from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_mac

    body = batch_of("crane-01", [denied_event("crane-01", 1)]).model_dump_json().encode()
    old = "1000000000"
    stale = world.http.post(
        "/api/v1/events",
        content=body,
        headers={
            HEADER_DEVICE: "crane-01",
            HEADER_TIMESTAMP: old,
            HEADER_SIGNATURE: request_mac(world.crane.key, "POST", "/api/v1/events", old, body),
        },
    )
    assert stale.status_code == 401 and stale.json()["detail"] == "device timestamp out of range"
    unsigned = world.http.post("/api/v1/events", content=body, headers={HEADER_DEVICE: "crane-01"})
    assert unsigned.status_code == 401 and unsigned.json()["detail"] == "device signature missing"
    assert _events(world) == 0


def test_sequence_gaps_are_recorded(world: World) -> None:
    world.crane.post_batch(batch_of("crane-01", [authorized_event("crane-01", s) for s in (1, 2)]))
    response = world.crane.post_batch(
        batch_of("crane-01", [authorized_event("crane-01", s) for s in (5, 6, 9)])
    )
    ack = EventBatchAck.model_validate_json(response.text)
    assert [(g.first_missing, g.last_missing) for g in ack.gaps] == [(3, 4), (7, 8)]
    gaps = world.call("supervisor", "GET", "/api/v1/devices/crane-01/gaps").json()
    assert [(g["first_missing"], g["last_missing"]) for g in gaps] == [(3, 4), (7, 8)]
    with world.app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SequenceGap)) == 2


def test_events_are_classified(world: World) -> None:
    world.crane.post_batch(
        batch_of("crane-01", [authorized_event("crane-01", 1), denied_event("crane-01", 2)])
    )
    world.forklift.post_batch(batch_of("forklift-01", [violation_event("forklift-01", 1)]))
    with world.app.state.sessions() as session:
        rows = session.execute(
            select(Event.reason, Event.flagged, Event.severity, Event.review_status).order_by(
                Event.reason
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("AUTHORIZED", False, "info", "none"),
        ("NO_MATCH", True, "medium", "open"),
        ("OVERFILL", True, "critical", "open"),  # the device said low; the server never lowers
    ]
    metrics = world.call("admin", "GET", "/metrics").text
    assert 'jifang_review_backlog{severity="critical"} 1.0' in metrics


def test_invalid_batch_names_the_problem(world: World) -> None:
    response = world.crane.request(
        "POST",
        "/api/v1/events",
        b'{"device_id": "crane-01", "events": []}',
        {"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("invalid event batch")


def _png() -> bytes:
    return cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def test_evidence_is_content_addressed(world: World) -> None:
    data = _png()
    sha = hashlib.sha256(data).hexdigest()
    path = f"/api/v1/evidence/{sha}"
    created = world.crane.request("PUT", path, data, {"Content-Type": "image/png"})
    assert created.status_code == 201, created.text
    assert world.crane.request("PUT", path, data, {"Content-Type": "image/png"}).status_code == 200
    stored = world.app.state.settings.evidence_dir / sha[:2] / sha
    assert stored.read_bytes() == data
    other = hashlib.sha256(b"x").hexdigest()
    mismatch = world.crane.request(
        "PUT", f"/api/v1/evidence/{other}", data, {"Content-Type": "image/png"}
    )
    assert mismatch.status_code == 400 and mismatch.json()["detail"] == "evidence hash mismatch"
    text = b"not an image at all"
    wrong_type = world.crane.request(
        "PUT",
        f"/api/v1/evidence/{hashlib.sha256(text).hexdigest()}",
        text,
        {"Content-Type": "image/png"},
    )
    assert wrong_type.status_code == 415
    big = b"\xff\xd8\xff" + bytes(world.app.state.settings.evidence_max_bytes)
    too_big = world.crane.request(
        "PUT",
        f"/api/v1/evidence/{hashlib.sha256(big).hexdigest()}",
        big,
        {"Content-Type": "image/jpeg"},
    )
    assert too_big.status_code == 413
    with world.app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Evidence)) == 1


def test_heartbeat_updates_the_device(world: World) -> None:
    from datetime import UTC, datetime

    from contract.messages import Heartbeat

    beat = Heartbeat(
        device_id="crane-01",
        sent_at=datetime.now(UTC),
        agent_version="0.1",
        state="locked",
        gallery_version=3,
    )
    response = world.crane.request(
        "POST",
        "/api/v1/devices/crane-01/heartbeat",
        beat.model_dump_json().encode(),
        {"Content-Type": "application/json"},
    )
    assert response.status_code == 204, response.text
    devices = world.call("admin", "GET", "/api/v1/devices").json()
    crane = next(d for d in devices if d["id"] == "crane-01")
    assert crane["gallery_version"] == 3 and crane["last_seen_at"] is not None
    assert "key" not in crane


def test_a_batch_of_a_hundred_is_stored_once(world: World) -> None:
    # Large enough for the PostgreSQL COPY path.
    events = [
        denied_event("crane-01", s) if s % 10 == 0 else authorized_event("crane-01", s)
        for s in range(100)
    ]
    batch = batch_of("crane-01", events)
    ack = EventBatchAck.model_validate_json(world.crane.post_batch(batch).text)
    assert len(ack.accepted) == 100
    assert (
        len(EventBatchAck.model_validate_json(world.crane.post_batch(batch).text).duplicates) == 100
    )
    assert _events(world) == 100
    flagged = world.call(
        "supervisor", "GET", "/api/v1/review/events", params={"limit": 1000}
    ).json()
    assert len(flagged) == 10
    detail = world.call(
        "supervisor", "GET", f"/api/v1/review/events/{flagged[0]['event_id']}"
    ).json()
    assert detail["body"]["payload"]["decision"] == "denied"


def test_only_the_issued_key_text_signs(world: World) -> None:
    """One key form (docs/protocol.md): the decoded 32 bytes are not a second valid key."""
    decoded = DeviceClient(world.http, "crane-01", world.crane.key_hex)
    decoded.key = bytes.fromhex(world.crane.key_hex)
    response = decoded.post_batch(batch_of("crane-01", [denied_event("crane-01", 1)]))
    assert response.status_code == 401
    assert response.json()["detail"] == "device signature invalid"
