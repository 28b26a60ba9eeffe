"""Operators (ID numbers always masked) and their site assignments."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from server import audit, gallery
from server.api.deps import CertOfficeDep, SessionDep, StaffDep
from server.schemas import CertificatePublic, OperatorPublic, OperatorSitesUpdate
from server.tables import Certificate, Operator, OperatorSite, Site, Template

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
