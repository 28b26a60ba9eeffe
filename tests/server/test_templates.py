"""On-site enrollment: several quality-gated templates per operator reach the device gallery."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cv2
import numpy as np
from pydantic import TypeAdapter
from sqlalchemy import select

from contract.codes import ClaimKind, GateState, LivenessCheck, ReasonCode
from contract.ids import uuid7
from contract.messages import (
    CabDecisionEvent,
    CabDecisionPayload,
    ClaimInfo,
    Event,
    GalleryDelta,
    MatchInfo,
)
from server.tables import AuditEntry, Template
from server.tables import Event as EventRow
from server.templates import capture_from_start
from tests.models.faces import astronaut
from tests.server.conftest import World
from tests.server.helpers import batch_of
from tests.server.test_gallery import _contract, _import, _open, _snapshot
from tests.server.web.conftest import jpeg, upload


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def test_onsite_capture_adds_a_template_the_device_receives(world: World) -> None:
    _import(world, 1)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    (operator,) = first.operators
    before = [t for t in first.templates if t.operator_id == operator.operator_id]
    capture = cv2.convertScaleAbs(cv2.resize(astronaut(), None, fx=0.9, fy=0.9), beta=15)
    path = f"/api/v1/operators/{operator.operator_id}/templates"

    added = world.http.post(
        path,
        content=_png(capture),
        headers={"Content-Type": "image/png"} | world.as_role("cert_office"),
    )
    assert added.status_code == 201, added.text
    assert added.json()["template_count"] == len(before) + 1

    delta = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    mine = [t for t in delta.upsert_templates if t.operator_id == operator.operator_id]
    assert len(mine) == len(before) + 1
    assert float(np.dot(mine[0].embedding, mine[-1].embedding)) > 0.9

    again = world.http.post(
        path,
        content=_png(capture),
        headers={"Content-Type": "image/png"} | world.as_role("cert_office"),
    )
    assert again.status_code == 409
    assert again.json()["detail"] == "photo already enrolled for this operator"


def test_unusable_capture_is_refused_and_nothing_changes(world: World) -> None:
    _import(world, 1)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    (operator,) = first.operators
    path = f"/api/v1/operators/{operator.operator_id}/templates"
    blank = world.http.post(
        path,
        content=_png(np.full((300, 300, 3), 128, np.uint8)),
        headers={"Content-Type": "image/png"} | world.as_role("cert_office"),
    )
    assert blank.status_code == 422
    assert blank.json()["detail"] == "photo not enrolled: no face found"
    wrong_type = world.http.post(
        path,
        content=b"GIF89a",
        headers={"Content-Type": "image/gif"} | world.as_role("cert_office"),
    )
    assert wrong_type.status_code == 415
    unknown = world.http.post(
        "/api/v1/operators/nobody/templates",
        content=_png(astronaut()),
        headers={"Content-Type": "image/png"} | world.as_role("cert_office"),
    )
    assert unknown.status_code == 404
    after = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(after, GalleryDelta)
    assert after.upsert_templates == ()


# Templates from starts: AUTHORIZED under a 1:1 claim, liveness settled by the passive check.


def _start(
    world: World,
    operator_id: str,
    seq: int,
    frame: np.ndarray,
    *,
    claim: bool = True,
    liveness_by: LivenessCheck | None = LivenessCheck.PASSIVE,
) -> str:
    """A crane start as the cab agent reports it: evidence first, then the event."""
    evidence = upload(world.crane, jpeg(frame), "image/jpeg")
    event = CabDecisionEvent(
        event_id=uuid7(),
        device_id="crane-01",
        seq=seq,
        occurred_at=datetime.now(UTC),
        reason=ReasonCode.AUTHORIZED,
        evidence=(evidence,),
        payload=CabDecisionPayload(
            decision="authorized",
            state_from=GateState.VERIFYING,
            state_to=GateState.AUTHORIZED,
            frames_used=3,
            match=MatchInfo(operator_id=operator_id, score=0.97, threshold=0.9, margin=2.0),
            liveness_score=0.99 if liveness_by == LivenessCheck.PASSIVE else None,
            liveness_by=liveness_by,
            claim=ClaimInfo(kind=ClaimKind.EMPLOYEE_NO, value="E1") if claim else None,
        ),
    )
    posted = world.crane.post_batch(batch_of("crane-01", [event]))
    assert posted.status_code == 200, posted.text
    return str(event.event_id)


def _frames() -> list[np.ndarray]:
    """Distinct good frames of the astronaut (each a different capture)."""
    face = astronaut()
    return [cv2.convertScaleAbs(face, alpha=1.0, beta=b) for b in (5, 15, 25, 35)]


def _templates(world: World, operator_id: str) -> list[Template]:
    with world.app.state.sessions() as session:
        rows = session.scalars(
            select(Template)
            .where(Template.operator_id == operator_id)
            .order_by(Template.created_at)
        ).all()
        session.expunge_all()
        return list(rows)


def _audit(world: World, action: str) -> list[dict[str, object]]:
    with world.app.state.sessions() as session:
        return [
            json.loads(e.data)
            for e in session.scalars(select(AuditEntry).where(AuditEntry.action == action))
        ]


def test_an_authorized_claimed_start_adds_a_capture_the_device_receives(world: World) -> None:
    _import(world, 1)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    (operator,) = first.operators
    event_id = _start(world, operator.operator_id, 1, _frames()[0])
    rows = _templates(world, operator.operator_id)
    assert [t.origin for t in rows] == ["certificate", "start_capture"]
    capture = rows[-1]
    assert capture.event_id == event_id and 0.0 < capture.quality <= 1.0
    delta = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    assert capture.id in {t.template_id for t in delta.upsert_templates}
    (entry,) = _audit(world, "template.capture")
    assert entry["event_id"] == event_id and entry["replaced"] is None
    # The same event again is a duplicate: no second template.
    assert len(_templates(world, operator.operator_id)) == 2


def test_no_capture_from_a_1n_start_a_liveness_doubt_or_a_poor_frame(world: World) -> None:
    _import(world, 1)
    (operator,) = _snapshot(world, world.crane.gallery(0, _contract(world))).operators
    frames = _frames()
    _start(world, operator.operator_id, 1, frames[0], claim=False)
    _start(world, operator.operator_id, 2, frames[1], liveness_by=LivenessCheck.CHALLENGE)
    _start(world, operator.operator_id, 3, frames[2], liveness_by=LivenessCheck.NONE)
    _start(world, operator.operator_id, 4, frames[3], liveness_by=None)
    blurred = cv2.GaussianBlur(cv2.resize(astronaut(), None, fx=0.3, fy=0.3), (9, 9), 4)
    _start(world, operator.operator_id, 5, blurred)
    assert [t.origin for t in _templates(world, operator.operator_id)] == ["certificate"]
    assert _audit(world, "template.capture") == []


def test_captures_are_capped_and_replace_the_oldest_capture(world: World) -> None:
    _import(world, 1)
    (operator,) = _snapshot(world, world.crane.gallery(0, _contract(world))).operators
    op_id = operator.operator_id
    faces = world.app.state.faces
    evidence_dir = world.app.state.settings.evidence_dir
    ids = [
        _start(world, op_id, i + 1, frame, liveness_by=None) for i, frame in enumerate(_frames())
    ]
    events = {}
    with world.app.state.sessions() as session:
        for event_id in ids:
            row = session.get(EventRow, event_id)
            assert row is not None
            body = dict(row.body)
            body["payload"] = {**body["payload"], "liveness_by": "passive"}
            events[event_id] = TypeAdapter(Event).validate_python(body)
        # Cap 2: the certificate photo and one capture; each new capture replaces the last.
        first = capture_from_start(session, faces, events[ids[0]], evidence_dir, cap=2)
        second = capture_from_start(session, faces, events[ids[1]], evidence_dir, cap=2)
        session.commit()
        assert first.template_id and second.replaced == first.template_id
        kept = session.scalars(select(Template).where(Template.operator_id == op_id)).all()
        assert sorted(t.origin for t in kept) == ["certificate", "start_capture"]
        # At the cap with no capture to replace (a staff enrolment), nothing is added.
        session.delete(session.get(Template, second.template_id))
        session.add(
            Template(
                id="tpl-staff",
                operator_id=op_id,
                pack_name="p",
                pack_version="1",
                contract_id=_contract(world),
                dim=128,
                embedding=[0.0] * 128,
                source_sha256="e" * 64,
                quality=0.9,
                created_at=datetime.now(UTC),
                origin="enrollment",
            )
        )
        session.commit()
        full = capture_from_start(session, faces, events[ids[2]], evidence_dir, cap=2)
        assert full.template_id is None and "none is a start capture" in (full.refused or "")
        session.rollback()
    entries = _audit(world, "template.capture")
    assert [e["replaced"] for e in entries] == [None, first.template_id]


def test_templates_are_listed_and_removable_on_the_operator_page(world: World) -> None:
    import re

    import httpx

    from tests.server.conftest import PASSWORD

    _import(world, 1)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    (operator,) = first.operators
    op_id = operator.operator_id
    event_id = _start(world, op_id, 1, _frames()[0])
    capture, certificate = (
        next(t for t in _templates(world, op_id) if t.origin == origin)
        for origin in ("start_capture", "certificate")
    )
    with httpx.Client(base_url=world.base, timeout=60) as client:
        login = client.post("/login", data={"username": "supervisor", "password": PASSWORD})
        assert login.status_code == 303
        page = client.get(f"/operators/{op_id}").text
        assert "证件照" in page and "启动抓拍" in page and f'href="/review/{event_id}"' in page
        assert "每人最多 8 个" in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        kept = client.post(
            f"/operators/{op_id}/templates/{certificate.id}/remove", data={"csrf": csrf.group(1)}
        )
        assert kept.status_code == 409 and "证件照始终保留" in kept.text
        forged = client.post(f"/operators/{op_id}/templates/{capture.id}/remove", data={})
        assert forged.status_code == 400
        assert len(_templates(world, op_id)) == 2
        removed = client.post(
            f"/operators/{op_id}/templates/{capture.id}/remove",
            data={"csrf": csrf.group(1)},
            follow_redirects=False,
        )
        assert removed.status_code == 303
        assert "模板已删除" in client.get(removed.headers["location"]).text
    assert [t.id for t in _templates(world, op_id)] == [certificate.id]
    (entry,) = _audit(world, "template.remove")
    assert entry["template_id"] == capture.id and entry["origin"] == "start_capture"
    delta = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    assert capture.id not in {t.template_id for t in delta.upsert_templates}
