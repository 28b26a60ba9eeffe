"""Audit chain verification over HTTP (admin)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from server import audit
from server.api.deps import AdminDep, SessionDep
from server.schemas import AuditReport
from server.tables import AuditEntry

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("/verify")
def verify_chain(principal: AdminDep, session: SessionDep) -> AuditReport:
    """Walk the chain and name any edited, inserted or deleted row."""
    problems = audit.verify(session)
    count = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    return AuditReport(ok=not problems, entries=count, problems=[str(p) for p in problems])
