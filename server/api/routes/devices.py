"""Device registration and the device-facing gallery, config and heartbeat endpoints."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from contract.auth import sign_envelope
from contract.codes import DeviceKind
from contract.messages import (
    CategoryRule,
    DeviceConfig,
    GalleryUpdateRequired,
    Heartbeat,
    SignedEnvelope,
)
from models.errors import ModelError
from server import audit, gallery, station
from server.api.deps import AdminDep, DeviceDep, SessionDep, StaffDep, own_device
from server.schemas import DeviceCreate, DevicePublic, DeviceRegistered, DeviceUpdate, GapPublic
from server.tables import Device, SequenceGap, Site

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DEVICE_KEY_BYTES = 32


@router.post("", status_code=201)
def register_device(
    body: DeviceCreate, principal: AdminDep, session: SessionDep, request: Request
) -> DeviceRegistered:
    """Register a device; its key is returned once and never shown again."""
    if session.get(Site, body.site_id) is None:
        raise HTTPException(404, "site not found")
    if session.get(Device, body.device_id) is not None:
        raise HTTPException(409, "device exists")
    key = secrets.token_bytes(DEVICE_KEY_BYTES)
    rules = [r.model_dump(mode="json") for r in body.accepted_categories]
    session.add(
        Device(
            id=body.device_id,
            kind=str(body.kind),
            site_id=body.site_id,
            serial=body.serial,
            key=key,
            accepted_categories=rules,
            calibration=body.calibration,
            config_version=1,
            active=True,
            created_at=datetime.now(UTC),
            gallery_version=0,
            pack_contract_id="",
            agent_version="",
            state="",
        )
    )
    session.flush()
    gallery.bump(session, device_id=body.device_id)
    audit.append(
        session,
        principal.actor,
        "device.register",
        f"device:{body.device_id}",
        {"kind": body.kind, "site_id": body.site_id, "accepted_categories": rules},
    )
    session.commit()
    server_key = request.app.state.server_key
    return DeviceRegistered(
        device_id=body.device_id,
        device_key=key.hex(),
        server_public_key=server_key.public_b64,
        key_id=server_key.key_id,
    )


@router.get("")
def list_devices(principal: StaffDep, session: SessionDep) -> list[DevicePublic]:
    """Every device (keys are never shown)."""
    return [
        DevicePublic.model_validate(d) for d in session.scalars(select(Device).order_by(Device.id))
    ]


@router.patch("/{device_id}")
def update_device(
    device_id: str, body: DeviceUpdate, principal: AdminDep, session: SessionDep
) -> DevicePublic:
    """Change a device's site, categories or calibration; its next gallery delta follows."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(404, "device not found")
    changes = body.model_dump(mode="json", exclude_unset=True)
    if "site_id" in changes and session.get(Site, body.site_id) is None:
        raise HTTPException(404, "site not found")
    for name, value in changes.items():
        setattr(device, name, value)
    device.config_version += 1
    session.flush()
    gallery.bump(session, device_id=device_id)
    audit.append(session, principal.actor, "device.config", f"device:{device_id}", changes)
    session.commit()
    return DevicePublic.model_validate(device)


@router.get("/{device_id}/gaps")
def device_gaps(device_id: str, principal: StaffDep, session: SessionDep) -> list[GapPublic]:
    """Sequence gaps recorded for a device."""
    rows = session.scalars(
        select(SequenceGap).where(SequenceGap.device_id == device_id).order_by(SequenceGap.id)
    )
    return [GapPublic.model_validate(r) for r in rows]


def _envelope(request: Request, payload_type: str, payload_json: str) -> SignedEnvelope:
    key = request.app.state.server_key
    return sign_envelope(key.private, key.key_id, payload_type, payload_json)


@router.get("/{device_id}/gallery", response_model=None)
def device_gallery(
    device_id: str,
    principal: DeviceDep,
    session: SessionDep,
    request: Request,
    since: int = Query(default=0, ge=0),
    contract: str = Query(default="", max_length=128),
) -> SignedEnvelope | JSONResponse:
    """The device's gallery since a version, signed; 409 when its pack cannot compare."""
    device = own_device(principal, device_id)
    try:
        server_contract = request.app.state.faces.contract
    except (ModelError, OSError) as err:
        # Without its pack the server cannot say what its templates mean: send nothing.
        logger.error("face pack unavailable: %s", err)
        raise HTTPException(503, "face pack unavailable") from err
    if contract != server_contract.contract_id:
        body = GalleryUpdateRequired(
            device_id=device_id,
            server_contract=server_contract,
            device_contract_id=contract,
            detail="the device's model pack differs from the server's; update the pack",
        )
        return JSONResponse(status_code=409, content=body.model_dump(mode="json"))
    if gallery.expire_due(session):
        session.commit()
    current = gallery.current_version(session)
    if since == 0 or since > current:
        message = gallery.snapshot(session, device, server_contract)
        envelope = _envelope(request, "gallery.snapshot", message.model_dump_json())
        version = message.version
    else:
        delta = gallery.delta(session, device, since, server_contract)
        envelope = _envelope(request, "gallery.delta", delta.model_dump_json())
        version = delta.to_version
    device.gallery_version = version
    device.last_gallery_at = datetime.now(UTC)
    device.pack_contract_id = contract
    session.commit()
    return envelope


@router.get("/{device_id}/config")
def device_config(
    device_id: str, principal: DeviceDep, session: SessionDep, request: Request
) -> SignedEnvelope:
    """The device's settings, signed."""
    device = own_device(principal, device_id)
    config = DeviceConfig(
        device_id=device.id,
        kind=device.kind,
        site_id=device.site_id,
        config_version=device.config_version,
        issued_at=datetime.now(UTC),
        accepted_categories=tuple(
            CategoryRule.model_validate(r) for r in device.accepted_categories
        ),
        calibration=device.calibration,
    )
    return _envelope(request, "device.config", config.model_dump_json())


@router.get("/{device_id}/station-registry")
def device_station_registry(
    device_id: str, principal: DeviceDep, session: SessionDep, request: Request
) -> SignedEnvelope:
    """A filling station's cylinder registry slice, signed; 409 when it is at no one station."""
    device = own_device(principal, device_id)
    if device.kind != DeviceKind.FILLING_STATION.value:
        raise HTTPException(409, "only a filling_station device has a station registry")
    try:
        message = station.registry_slice(session, device)
    except station.NoStation as err:
        raise HTTPException(409, str(err)) from err
    return _envelope(request, "station.registry", message.model_dump_json())


@router.post("/{device_id}/heartbeat", status_code=204)
def heartbeat(
    device_id: str, body: Heartbeat, principal: DeviceDep, session: SessionDep
) -> Response:
    """Record that a device is alive and what it runs."""
    device = own_device(principal, device_id)
    if body.device_id != device_id:
        raise HTTPException(403, "device may only use its own id")
    device.last_seen_at = datetime.now(UTC)
    device.agent_version = body.agent_version
    device.state = body.state
    if body.pack_contract_id:
        device.pack_contract_id = body.pack_contract_id
    device.gallery_version = body.gallery_version
    session.commit()
    return Response(status_code=204)
