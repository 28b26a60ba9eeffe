"""Certificates: look up, revoke, suspend, reinstate (reaches devices on their next sync)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException

from contract.codes import CertificateStatus
from server import audit, gallery
from server.api.deps import CertOfficeDep, Principal, SessionDep, StaffDep
from server.schemas import CertificatePublic, StatusChange
from server.tables import Certificate

router = APIRouter(prefix="/api/v1/certificates", tags=["certificates"])


@router.get("/{number}")
def get_certificate(number: str, principal: StaffDep, session: SessionDep) -> CertificatePublic:
    """One certificate."""
    cert = session.get(Certificate, number)
    if cert is None:
        raise HTTPException(404, "certificate not found")
    return CertificatePublic.model_validate(cert)


def _set_status(
    session: SessionDep, principal: Principal, number: str, status: CertificateStatus, reason: str
) -> CertificatePublic:
    cert = session.get(Certificate, number)
    if cert is None:
        raise HTTPException(404, "certificate not found")
    if cert.status == CertificateStatus.REVOKED and status != CertificateStatus.REVOKED:
        raise HTTPException(409, "certificate is revoked")
    before = cert.status
    cert.status = str(status)
    cert.status_reason = reason
    cert.updated_at = datetime.now(UTC)
    session.flush()
    gallery.bump(session, [cert.operator_id])
    audit.append(
        session,
        principal.actor,
        f"certificate.{status}",
        f"certificate:{number}",
        {"from": before, "to": str(status), "reason": reason},
    )
    session.commit()
    return CertificatePublic.model_validate(cert)


@router.post("/{number}/revoke")
def revoke(
    number: str, body: StatusChange, principal: CertOfficeDep, session: SessionDep
) -> CertificatePublic:
    """Revoke a certificate for good."""
    return _set_status(session, principal, number, CertificateStatus.REVOKED, body.reason)


@router.post("/{number}/suspend")
def suspend(
    number: str, body: StatusChange, principal: CertOfficeDep, session: SessionDep
) -> CertificatePublic:
    """Suspend a certificate until reinstated."""
    return _set_status(session, principal, number, CertificateStatus.SUSPENDED, body.reason)


@router.post("/{number}/reinstate")
def reinstate(
    number: str, body: StatusChange, principal: CertOfficeDep, session: SessionDep
) -> CertificatePublic:
    """Lift a suspension."""
    cert = session.get(Certificate, number)
    if cert is not None and cert.expiry_date < datetime.now(UTC).date():
        return _set_status(session, principal, number, CertificateStatus.EXPIRED, body.reason)
    return _set_status(session, principal, number, CertificateStatus.VALID, body.reason)
