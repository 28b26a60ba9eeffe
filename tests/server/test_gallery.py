"""Gallery distribution: signed snapshot and deltas, revocation reaches devices, contract check."""

from __future__ import annotations

from datetime import date

from contract.auth import load_public_key_b64, verify_envelope
from contract.messages import GalleryDelta, GallerySnapshot, GalleryUpdateRequired, SignedEnvelope
from tests.server.conftest import World
from tests.server.helpers import DeviceClient, csv_bytes, office_rows, zip_bytes
from tests.server.test_import import _photos, _upload


def _open(world: World, response) -> GallerySnapshot | GalleryDelta:  # noqa: ANN001
    assert response.status_code == 200, response.text
    envelope = SignedEnvelope.model_validate_json(response.text)
    public = load_public_key_b64(world.app.state.server_key.public_b64)
    payload = verify_envelope(public, envelope)
    if envelope.payload_type == "gallery.snapshot":
        return GallerySnapshot.model_validate_json(payload)
    return GalleryDelta.model_validate_json(payload)


def _snapshot(world: World, response) -> GallerySnapshot:  # noqa: ANN001
    opened = _open(world, response)
    assert isinstance(opened, GallerySnapshot)
    return opened


def _contract(world: World) -> str:
    return world.app.state.faces.contract.contract_id


def _import(world: World, n: int = 4) -> list[list[str]]:
    rows = office_rows(n, photo=True)
    response = _upload(world, "a.csv", csv_bytes(rows), zip_bytes(_photos(n)))
    assert response.status_code == 200, response.text
    return rows


def test_snapshot_holds_the_operators_authorized_for_the_device(world: World) -> None:
    rows = _import(world)
    crane = _snapshot(world, world.crane.gallery(0, _contract(world)))
    assert isinstance(crane, GallerySnapshot)
    names = {o.display_name for o in crane.operators}
    assert names == {rows[0][0], rows[2][0]}  # the Q2 holders, not the N1 ones
    assert {t.operator_id for t in crane.templates} == {o.operator_id for o in crane.operators}
    assert crane.contract.contract_id == _contract(world)
    forklift = _snapshot(world, world.forklift.gallery(0, _contract(world)))
    assert {o.display_name for o in forklift.operators} == {rows[1][0], rows[3][0]}
    assert all("*" in o.id_number_masked for o in forklift.operators)


def test_revocation_removes_the_operator_from_the_next_delta(world: World) -> None:
    rows = _import(world)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    assert isinstance(first, GallerySnapshot)
    revoked = next(o for o in first.operators if o.display_name == rows[0][0])
    response = world.call(
        "cert_office",
        "POST",
        f"/api/v1/certificates/{rows[0][2]}/revoke",
        json={"reason": "违规作业"},
    )
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    delta = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    assert delta.to_version > first.version
    assert delta.removed_operator_ids == (revoked.operator_id,)
    assert revoked.operator_id not in {o.operator_id for o in delta.upsert_operators}
    assert set(delta.removed_template_ids) == {
        t.template_id for t in first.templates if t.operator_id == revoked.operator_id
    }
    # The forklift's gallery never held that operator; its delta upserts nothing of theirs.
    other = _open(world, world.forklift.gallery(first.version, _contract(world)))
    assert revoked.operator_id not in {o.operator_id for o in other.upsert_operators}  # type: ignore[union-attr]
    after = _open(world, world.crane.gallery(delta.to_version, _contract(world)))
    assert isinstance(after, GalleryDelta)
    assert (after.upsert_operators, after.removed_operator_ids) == ((), ())


def test_suspension_and_reinstatement_reach_the_device(world: World) -> None:
    rows = _import(world, 2)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    world.call(
        "admin", "POST", f"/api/v1/certificates/{rows[0][2]}/suspend", json={"reason": "暂扣"}
    )
    suspended = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(suspended, GalleryDelta) and len(suspended.removed_operator_ids) == 1
    world.call(
        "admin", "POST", f"/api/v1/certificates/{rows[0][2]}/reinstate", json={"reason": "恢复"}
    )
    back = _open(world, world.crane.gallery(suspended.to_version, _contract(world)))
    assert isinstance(back, GalleryDelta)
    assert [o.display_name for o in back.upsert_operators] == [rows[0][0]]
    assert len(back.upsert_templates) == 1


def test_versions_are_monotonic(world: World) -> None:
    _import(world, 2)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    _import(world, 4)
    second = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(second, GalleryDelta) and second.to_version > first.version
    assert [o.display_name for o in second.upsert_operators] == ["操作员002"]


def test_contract_mismatch_asks_the_device_to_update(world: World) -> None:
    _import(world, 2)
    response = world.crane.gallery(0, "0" * 32)
    assert response.status_code == 409
    body = GalleryUpdateRequired.model_validate_json(response.text)
    assert body.server_contract.contract_id == _contract(world)
    assert body.device_contract_id == "0" * 32
    assert "embedding" not in response.text


def test_device_reads_only_its_own_gallery(world: World) -> None:
    path = f"/api/v1/devices/forklift-01/gallery?since=0&contract={_contract(world)}"
    response = world.crane.request("GET", path)
    assert response.status_code == 403
    assert response.json()["detail"] == "device may only use its own id"


def test_device_rule_change_resends_the_set(world: World) -> None:
    rows = _import(world, 4)
    first = _snapshot(world, world.forklift.gallery(0, _contract(world)))
    changed = world.call(
        "admin",
        "PATCH",
        "/api/v1/devices/forklift-01",
        json={"accepted_categories": [{"category": "Q2"}]},
    )
    assert changed.status_code == 200 and changed.json()["config_version"] == 2
    delta = _open(world, world.forklift.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    assert {o.display_name for o in delta.upsert_operators} == {rows[0][0], rows[2][0]}
    assert {o.operator_id for o in first.operators} <= set(delta.removed_operator_ids)


def test_config_is_signed(world: World) -> None:
    from contract.messages import DeviceConfig

    response = world.crane.request("GET", "/api/v1/devices/crane-01/config")
    envelope = SignedEnvelope.model_validate_json(response.text)
    public = load_public_key_b64(world.app.state.server_key.public_b64)
    config = DeviceConfig.model_validate_json(verify_envelope(public, envelope))
    assert config.accepted_categories[0].scope == "桥式起重机"


def test_wrong_key_reads_nothing(world: World) -> None:
    impostor = DeviceClient(world.http, "crane-01", "00" * 32)
    response = impostor.gallery(0, _contract(world))
    assert response.status_code == 401
    assert response.json()["detail"] == "device signature invalid"


def test_an_overdue_certificate_expires_and_leaves_the_gallery(world: World) -> None:
    from sqlalchemy import update

    from server.tables import Certificate

    rows = _import(world, 2)
    first = _snapshot(world, world.crane.gallery(0, _contract(world)))
    assert len(first.operators) == 1
    with world.app.state.sessions() as session:
        session.execute(
            update(Certificate)
            .where(Certificate.number == rows[0][2])
            .values(expiry_date=date(2020, 1, 1))
        )
        session.commit()
    delta = _open(world, world.crane.gallery(first.version, _contract(world)))
    assert isinstance(delta, GalleryDelta)
    assert delta.removed_operator_ids == (first.operators[0].operator_id,)
    cert = world.call("supervisor", "GET", f"/api/v1/certificates/{rows[0][2]}").json()
    assert cert["status"] == "expired"


def test_without_its_face_pack_the_server_sends_no_gallery(tmp_path, db_url: str) -> None:  # noqa: ANN001
    import httpx

    from server.app import create_app
    from server.settings import ServerSettings
    from tests.server.conftest import _bootstrap_admin
    from tests.server.helpers import live_server

    settings = ServerSettings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        model_dir=tmp_path / "empty",
        face_pack="absent",
    )
    app = create_app(settings)
    _bootstrap_admin(app)
    with live_server(app) as base, httpx.Client(base_url=base) as http:
        token = http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "correct horse battery"}
        ).json()
        admin = {"Authorization": f"Bearer {token['access_token']}"}
        http.post("/api/v1/enterprises", json={"id": "e", "name": "e"}, headers=admin)
        http.post(
            "/api/v1/sites", json={"id": "s", "enterprise_id": "e", "name": "s"}, headers=admin
        )
        made = http.post(
            "/api/v1/devices",
            json={"device_id": "c", "kind": "crane", "site_id": "s"},
            headers=admin,
        )
        device = DeviceClient(http, "c", made.json()["device_key"])
        response = device.gallery(0, "0" * 32)
        assert response.status_code == 503
        assert response.json()["detail"] == "face pack unavailable"
    app.state.engine.dispose()
