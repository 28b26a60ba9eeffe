"""The registry slice a filling-station device checks its scans against."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.codes import CertificateStatus
from contract.messages import (
    StationCylinder,
    StationCylinderType,
    StationFiller,
    StationRegistry,
)
from server.tables import (
    Certificate,
    Cylinder,
    CylinderType,
    Device,
    OperatorSite,
    Scale,
    Station,
)

logger = logging.getLogger(__name__)


class NoStation(Exception):
    """The device is not placed at exactly one filling station."""


def station_of(session: Session, device: Device) -> Station:
    """The station whose scales the device watches, else the only station at its site."""
    ids = set(session.scalars(select(Scale.station_id).where(Scale.device_id == device.id)))
    if not ids:
        ids = set(session.scalars(select(Station.id).where(Station.site_id == device.site_id)))
    if len(ids) != 1:
        raise NoStation(
            f"device {device.id} is linked to {len(ids)} stations; assign its scales to one"
        )
    station = session.get(Station, ids.pop())
    assert station is not None  # the id came from the table
    return station


def registry_slice(session: Session, device: Device) -> StationRegistry:
    """Every cylinder (a foreign one must be told from an unregistered one), the type table,
    and the certificates of the operators working at the device's site."""
    station = station_of(session, device)
    types = [
        StationCylinderType(code=t.code, rated_fill_kg=t.rated_fill_kg)
        for t in session.scalars(select(CylinderType).order_by(CylinderType.code))
    ]
    cylinders = [
        StationCylinder(
            code=c.code,
            type_code=c.type_code,
            owner_station_id=c.station_id,
            status=c.status,  # pydantic checks it against CylinderStatus
            manufactured_on=c.manufactured_on,
            design_life_years=c.design_life_years,
            next_inspection_due=c.next_inspection,
        )
        for c in session.scalars(select(Cylinder).order_by(Cylinder.code))
    ]
    operators = select(OperatorSite.operator_id).where(OperatorSite.site_id == device.site_id)
    fillers = [
        StationFiller(
            operator_id=c.operator_id,
            certificate_no=c.number,
            category=c.category,
            valid_until=c.expiry_date,
            status=CertificateStatus(c.status),
        )
        for c in session.scalars(
            select(Certificate)
            .where(Certificate.operator_id.in_(operators))
            .order_by(Certificate.operator_id, Certificate.number)
        )
    ]
    logger.info(
        "station registry for %s (%s): %d cylinders, %d types, %d certificates",
        device.id,
        station.id,
        len(cylinders),
        len(types),
        len(fillers),
    )
    return StationRegistry(
        device_id=device.id,
        station_id=station.id,
        generated_at=datetime.now(UTC),
        cylinder_types=tuple(types),
        cylinders=tuple(cylinders),
        fillers=tuple(fillers),
    )
