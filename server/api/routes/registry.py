"""Enterprises, sites, filling stations, scales, cylinder types and cylinders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import audit
from server.api.deps import AdminDep, Principal, SessionDep, StaffDep
from server.schemas import (
    CylinderCreate,
    CylinderPublic,
    CylinderTypeCreate,
    CylinderTypePublic,
    EnterpriseCreate,
    EnterprisePublic,
    ScaleCreate,
    ScalePublic,
    SiteCreate,
    SitePublic,
    StationCreate,
    StationPublic,
)
from server.tables import Cylinder, CylinderType, Device, Enterprise, Scale, Site, Station

router = APIRouter(prefix="/api/v1", tags=["registry"])


def _need(session: Session, table: Any, key: str, detail: str) -> Any:
    row = session.get(table, key)
    if row is None:
        raise HTTPException(404, detail)
    return row


def _add(session: Session, principal: Principal, row: Any, key: str, kind: str, data: Any) -> None:
    if session.get(type(row), key) is not None:
        raise HTTPException(409, f"{kind} exists")
    session.add(row)
    session.flush()
    audit.append(session, principal.actor, f"{kind}.create", f"{kind}:{key}", data)
    session.commit()


@router.post("/enterprises", status_code=201)
def add_enterprise(
    body: EnterpriseCreate, principal: AdminDep, session: SessionDep
) -> EnterprisePublic:
    """Register an enterprise."""
    row = Enterprise(**body.model_dump())
    _add(session, principal, row, body.id, "enterprise", body.model_dump())
    return EnterprisePublic.model_validate(row)


@router.get("/enterprises")
def list_enterprises(principal: StaffDep, session: SessionDep) -> list[EnterprisePublic]:
    """Every enterprise."""
    rows = session.scalars(select(Enterprise).order_by(Enterprise.id))
    return [EnterprisePublic.model_validate(r) for r in rows]


@router.post("/sites", status_code=201)
def add_site(body: SiteCreate, principal: AdminDep, session: SessionDep) -> SitePublic:
    """Register a site of an enterprise."""
    _need(session, Enterprise, body.enterprise_id, "enterprise not found")
    row = Site(**body.model_dump())
    _add(session, principal, row, body.id, "site", body.model_dump())
    return SitePublic.model_validate(row)


@router.get("/sites")
def list_sites(principal: StaffDep, session: SessionDep) -> list[SitePublic]:
    """Every site."""
    return [SitePublic.model_validate(r) for r in session.scalars(select(Site).order_by(Site.id))]


@router.post("/stations", status_code=201)
def add_station(body: StationCreate, principal: AdminDep, session: SessionDep) -> StationPublic:
    """Register a filling station."""
    _need(session, Site, body.site_id, "site not found")
    row = Station(**body.model_dump())
    _add(session, principal, row, body.id, "station", body.model_dump())
    return StationPublic.model_validate(row)


@router.get("/stations")
def list_stations(principal: StaffDep, session: SessionDep) -> list[StationPublic]:
    """Every filling station."""
    rows = session.scalars(select(Station).order_by(Station.id))
    return [StationPublic.model_validate(r) for r in rows]


@router.post("/scales", status_code=201)
def add_scale(body: ScaleCreate, principal: AdminDep, session: SessionDep) -> ScalePublic:
    """Register a scale at a station."""
    _need(session, Station, body.station_id, "station not found")
    if body.device_id is not None:
        _need(session, Device, body.device_id, "device not found")
    row = Scale(**body.model_dump())
    _add(session, principal, row, body.id, "scale", body.model_dump())
    return ScalePublic.model_validate(row)


@router.get("/scales")
def list_scales(principal: StaffDep, session: SessionDep) -> list[ScalePublic]:
    """Every scale."""
    return [
        ScalePublic.model_validate(r) for r in session.scalars(select(Scale).order_by(Scale.id))
    ]


@router.post("/cylinder-types", status_code=201)
def add_cylinder_type(
    body: CylinderTypeCreate, principal: AdminDep, session: SessionDep
) -> CylinderTypePublic:
    """Add a cylinder type with its rated fill mass."""
    row = CylinderType(**body.model_dump())
    _add(session, principal, row, body.code, "cylinder_type", body.model_dump())
    return CylinderTypePublic.model_validate(row)


@router.get("/cylinder-types")
def list_cylinder_types(principal: StaffDep, session: SessionDep) -> list[CylinderTypePublic]:
    """The type table."""
    rows = session.scalars(select(CylinderType).order_by(CylinderType.code))
    return [CylinderTypePublic.model_validate(r) for r in rows]


def _cylinder_public(row: Cylinder, ctype: CylinderType) -> CylinderPublic:
    return CylinderPublic(
        code=row.code,
        station_id=row.station_id,
        type_code=row.type_code,
        rated_fill_kg=ctype.rated_fill_kg,
        manufactured_on=row.manufactured_on,
        design_life_years=row.design_life_years,
        last_inspection=row.last_inspection,
        next_inspection=row.next_inspection,
        status=row.status,
    )


@router.post("/cylinders", status_code=201)
def add_cylinder(body: CylinderCreate, principal: AdminDep, session: SessionDep) -> CylinderPublic:
    """Register a cylinder (its code is unique)."""
    _need(session, Station, body.station_id, "station not found")
    ctype = _need(session, CylinderType, body.type_code, "cylinder type not found")
    if session.scalar(select(Cylinder.id).where(Cylinder.code == body.code)) is not None:
        raise HTTPException(409, "cylinder exists")
    values = body.model_dump()
    values["design_life_years"] = body.design_life_years or ctype.design_life_years
    row = Cylinder(**values)
    session.add(row)
    session.flush()
    audit.append(
        session,
        principal.actor,
        "cylinder.create",
        f"cylinder:{body.code}",
        body.model_dump(mode="json"),
    )
    session.commit()
    return _cylinder_public(row, ctype)


@router.get("/cylinders/{code}")
def get_cylinder(code: str, principal: StaffDep, session: SessionDep) -> CylinderPublic:
    """One cylinder by code."""
    row = session.scalar(select(Cylinder).where(Cylinder.code == code))
    if row is None:
        raise HTTPException(404, "cylinder not found")
    return _cylinder_public(row, session.get_one(CylinderType, row.type_code))
