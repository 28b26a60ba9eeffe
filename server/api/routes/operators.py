"""Operators (ID numbers always masked) and their site assignments."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from server import audit, gallery
from server.api.body import BodyDep
from server.api.deps import CertOfficeDep, SessionDep, SettingsDep, StaffDep, body_limit
from server.domain import TemplateOrigin
from server.faces import EnrollmentError, FaceService
from server.schemas import CertificatePublic, OperatorPublic, OperatorSitesUpdate
from server.tables import Certificate, Operator, OperatorSite, Site, Template
from server.templates import new_template

router = APIRouter(prefix="/api/v1/operators", tags=["operators"])


def operator_public(session: Session, op: Operator) -> OperatorPublic:
    """An operator with certificates and sites; never the full ID number."""
    certs = session.scalars(
        select(Certificate).where(Certificate.operator_id == op.id).order_by(Certificate.number)
    )
    sites = session.scalars(
        select(OperatorSite.site_id)
        .where(OperatorSite.operator_id == op.id)
        .order_by(OperatorSite.site_id)
    ).all()
    templates = session.scalar(select(func.count()).where(Template.operator_id == op.id)) or 0
    return OperatorPublic(
        id=op.id,
        name=op.name,
        id_number_masked=op.id_number_masked,
        employee_no=op.employee_no,
        ic_card=op.ic_card,
        site_ids=list(sites),
        certificates=[CertificatePublic.model_validate(c) for c in certs],
        template_count=templates,
    )


@router.get("")
def list_operators(
    principal: StaffDep,
    session: SessionDep,
    name: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> list[OperatorPublic]:
    """Operators, optionally by name."""
    query = select(Operator).order_by(Operator.name, Operator.id).limit(limit).offset(offset)
    if name:
        query = query.where(Operator.name == name)
    return [operator_public(session, op) for op in session.scalars(query)]


@router.get("/{operator_id}")
def get_operator(operator_id: str, principal: StaffDep, session: SessionDep) -> OperatorPublic:
    """One operator."""
    op = session.get(Operator, operator_id)
    if op is None:
        raise HTTPException(404, "operator not found")
    return operator_public(session, op)


@router.put("/{operator_id}/sites")
def set_sites(
    operator_id: str, body: OperatorSitesUpdate, principal: CertOfficeDep, session: SessionDep
) -> OperatorPublic:
    """Set the sites an operator works at (their devices' galleries follow)."""
    op = session.get(Operator, operator_id)
    if op is None:
        raise HTTPException(404, "operator not found")
    wanted = sorted(set(body.site_ids))
    known = set(session.scalars(select(Site.id).where(Site.id.in_(wanted))).all())
    if missing := [s for s in wanted if s not in known]:
        raise HTTPException(404, f"site not found: {', '.join(missing)}")
    session.execute(delete(OperatorSite).where(OperatorSite.operator_id == operator_id))
    if wanted:
        session.execute(
            insert(OperatorSite), [{"operator_id": operator_id, "site_id": s} for s in wanted]
        )
    gallery.bump(session, [operator_id])
    audit.append(session, principal.actor, "operator.sites", f"operator:{operator_id}", wanted)
    session.commit()
    return operator_public(session, op)


ENROLL_MEDIA_TYPES = ("image/jpeg", "image/png")


@router.post(
    "/{operator_id}/templates",
    status_code=201,
    dependencies=[body_limit("evidence_max_bytes")],
)
def add_template(
    operator_id: str,
    request: Request,
    principal: CertOfficeDep,
    session: SessionDep,
    settings: SettingsDep,
    photo: BodyDep,
) -> OperatorPublic:
    """Add an on-site enrollment capture as another template (quality-gated, one photo)."""
    op = session.get(Operator, operator_id)
    if op is None:
        raise HTTPException(404, "operator not found")
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    if media_type not in ENROLL_MEDIA_TYPES:
        raise HTTPException(415, "photo must be image/jpeg or image/png")
    if not photo or len(photo) > settings.evidence_max_bytes:
        raise HTTPException(413, "photo empty or too large")
    faces: FaceService = request.app.state.faces
    try:
        enrolled = faces.enroll(photo)
    except EnrollmentError as err:
        raise HTTPException(422, f"photo not enrolled: {err}") from err
    contract = faces.contract
    existing = session.scalars(
        select(Template.source_sha256).where(
            Template.operator_id == operator_id, Template.contract_id == contract.contract_id
        )
    ).all()
    if enrolled.source_sha256 in existing:
        raise HTTPException(409, "photo already enrolled for this operator")
    if len(existing) >= settings.enroll_max_templates:
        raise HTTPException(409, "operator already has the maximum number of templates")
    session.add(new_template(operator_id, enrolled, contract, TemplateOrigin.ENROLLMENT))
    gallery.bump(session, [operator_id])
    audit.append(
        session,
        principal.actor,
        "template.add",
        f"operator:{operator_id}",
        {"source_sha256": enrolled.source_sha256, "quality": enrolled.quality},
    )
    session.commit()
    return operator_public(session, op)
