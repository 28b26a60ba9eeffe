"""On-site enrollment: several quality-gated templates per operator reach the device gallery."""

from __future__ import annotations

import cv2
import numpy as np

from contract.messages import GalleryDelta
from tests.models.faces import astronaut
from tests.server.conftest import World
from tests.server.test_gallery import _contract, _import, _open, _snapshot


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
