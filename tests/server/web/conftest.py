"""Web-page fixtures: a seeded review world and a headless Chromium from the Debian package."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from contract.codes import EventKind, ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    CabDecisionEvent,
    CabDecisionPayload,
    EvidenceRef,
    Heartbeat,
    MatchInfo,
    StationFillEvent,
    StationFillPayload,
    StationViolationEvent,
    StationViolationPayload,
)
from tests.models.faces import astronaut, cameraman
from tests.server.conftest import World
from tests.server.helpers import DeviceClient, batch_of, csv_bytes, office_rows, zip_bytes

THRESHOLD = 0.95


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, db_url: str, model_dir: Path):  # noqa: ANN201
    """The server settings, with `@pytest.mark.settings(name=value)` overrides."""
    from server.settings import ServerSettings

    marker = request.node.get_closest_marker("settings")
    overrides = dict(marker.kwargs) if marker is not None else {}
    return ServerSettings(
        data_dir=tmp_path / "data", database_url=db_url, model_dir=model_dir, **overrides
    )


@dataclass
class Seeded:
    """The review world with known events."""

    world: World
    no_match: str
    expired: str
    overfill: str
    authorized: str
    old: str
    operator_id: str
    certificate_no: str
    face_box: tuple[float, float, float, float]
    station: DeviceClient
    photo: bytes


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a BGR image."""
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())


def jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def upload(device: DeviceClient, data: bytes, media_type: str) -> EvidenceRef:
    """Upload an evidence image the way a device does; returns its reference."""
    sha = hashlib.sha256(data).hexdigest()
    response = device.request("PUT", f"/api/v1/evidence/{sha}", data, {"Content-Type": media_type})
    assert response.status_code in (200, 201), response.text
    return EvidenceRef(sha256=sha, media_type=media_type)  # type: ignore[arg-type]


def cab_event(
    device: str,
    seq: int,
    at: datetime,
    reason: ReasonCode,
    match: MatchInfo | None,
    evidence: tuple[EvidenceRef, ...] = (),
    liveness: float | None = 0.97,
) -> CabDecisionEvent:
    """A cab start verification."""
    authorized = reason == ReasonCode.AUTHORIZED
    return CabDecisionEvent(
        event_id=uuid7(),
        device_id=device,
        seq=seq,
        occurred_at=at,
        reason=reason,
        evidence=evidence,
        payload=CabDecisionPayload(
            decision="authorized" if authorized else "denied",
            state_from="verifying",
            state_to="authorized" if authorized else "locked",
            frames_used=5,
            match=match,
            liveness_score=liveness,
        ),
    )


@pytest.fixture
def seeded(world: World, engine) -> Seeded:  # noqa: ANN001 - FaceEngine
    """Operators imported, a filling station registered, flagged events with evidence."""
    admin = world.as_role("admin")
    photo = jpeg(astronaut())
    rows = office_rows(1, photo=True)
    rows[0][0] = "张伟"
    imported = world.http.post(
        "/api/v1/sync/operators",
        files={
            "file": ("office.csv", csv_bytes(rows)),
            "photos": ("p.zip", zip_bytes({"p0.jpg": photo})),
        },
        headers=world.as_role("cert_office"),
    )
    assert imported.status_code == 200, imported.text
    operator = world.call("supervisor", "GET", "/api/v1/operators").json()[0]
    certificate = operator["certificates"][0]["number"]
    for path, body in (
        ("/api/v1/stations", {"id": "stn-1", "site_id": "site-2", "name": "历城充装站"}),
        (
            "/api/v1/cylinder-types",
            {"code": "YSP-15", "rated_fill_kg": 14.5, "design_life_years": 8},
        ),
        (
            "/api/v1/cylinders",
            {
                "code": "CYL-0001",
                "station_id": "stn-1",
                "type_code": "YSP-15",
                "manufactured_on": "2020-05-01",
                "next_inspection": "2027-05-01",
            },
        ),
        (
            "/api/v1/devices",
            {"device_id": "station-01", "kind": "filling_station", "site_id": "site-2"},
        ),
    ):
        made = world.http.post(path, json=body, headers=admin)
        assert made.status_code == 201, made.text
        if path == "/api/v1/devices":
            station = DeviceClient(world.http, "station-01", made.json()["device_key"])

    face_image = astronaut()
    face_box = tuple(float(v) for v in engine.detect(face_image)[0].detection.box)
    face_ref = upload(world.crane, png(face_image), "image/png").model_copy(
        update={"box": face_box}
    )
    zone_ref = upload(station, jpeg(cameraman()), "image/jpeg").model_copy(
        update={"role": "zone", "box": (120.0, 200.0, 420.0, 500.0)}
    )
    now = datetime.now(UTC)
    best = MatchInfo(
        operator_id=operator["id"],
        certificate_no=certificate,
        score=0.412,
        threshold=THRESHOLD,
        margin=0.05,
    )
    no_match = cab_event(
        "crane-01", 1, now - timedelta(minutes=30), ReasonCode.NO_MATCH, best, (face_ref,)
    )
    authorized = cab_event(
        "crane-01",
        2,
        now - timedelta(minutes=26),
        ReasonCode.AUTHORIZED,
        best.model_copy(update={"score": 0.981}),
    )
    expired = cab_event(
        "crane-01",
        3,
        now - timedelta(minutes=10),
        ReasonCode.CERT_EXPIRED,
        best.model_copy(update={"score": 0.975}),
        (face_ref,),
    )
    old = cab_event(
        "crane-01", 0, now - timedelta(days=3), ReasonCode.LIVENESS_FAILED, None, liveness=0.12
    )
    overfill = StationViolationEvent(
        event_id=uuid7(),
        device_id="station-01",
        seq=1,
        occurred_at=now - timedelta(minutes=5),
        reason=ReasonCode.OVERFILL,
        severity=Severity.HIGH,
        kind=EventKind.STATION_VIOLATION,
        evidence=(zone_ref,),
        payload=StationViolationPayload(
            scale_id="scale-1",
            cylinder_code="CYL-0001",
            scanned_code="CYL-0001",
            observed=16.2,
            limit=14.5,
        ),
    )
    for device, events in (
        (world.crane, [old, no_match, authorized, expired]),
        (station, [overfill]),
    ):
        posted = device.post_batch(batch_of(device.device_id, events))
        assert posted.status_code == 200, posted.text
    beat = Heartbeat(device_id="station-01", sent_at=now, agent_version="1.0", state="idle")
    assert (
        station.request(
            "POST",
            "/api/v1/devices/station-01/heartbeat",
            beat.model_dump_json().encode(),
            {"Content-Type": "application/json"},
        ).status_code
        == 204
    )
    return Seeded(
        world=world,
        no_match=str(no_match.event_id),
        expired=str(expired.event_id),
        overfill=str(overfill.event_id),
        authorized=str(authorized.event_id),
        old=str(old.event_id),
        operator_id=operator["id"],
        certificate_no=certificate,
        face_box=face_box,  # type: ignore[arg-type]
        station=station,
        photo=photo,
    )


def post_overfilled_fill(seeded: Seeded) -> str:
    """The station delivers the fill that broke the seeded overfill rule, naming it, with a
    frame of its own; the fill's id."""
    overfill_at = datetime.now(UTC) - timedelta(minutes=5)
    frame = upload(seeded.station, png(cameraman()), "image/png").model_copy(
        update={"role": "zone"}
    )
    event = StationFillEvent(
        event_id=uuid7(),
        device_id="station-01",
        seq=2,
        occurred_at=overfill_at,
        reason=ReasonCode.OVERFILL,
        severity=Severity.CRITICAL,
        evidence=(frame,),
        payload=StationFillPayload(
            scale_id="scale-1",
            cylinder_code="CYL-0001",
            scanned_code="CYL-0001",
            tare_kg=15.3,
            net_kg=16.2,
            rated_fill_kg=14.5,
            started_at=overfill_at - timedelta(seconds=40),
            ended_at=overfill_at,
            violation_ids=(uuid.UUID(seeded.overfill),),
        ),
    )
    posted = seeded.station.post_batch(batch_of("station-01", [event]))
    assert posted.status_code == 200, posted.text
    return str(event.event_id)
