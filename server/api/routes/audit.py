"""The audit chain over HTTP (admin): verify it, sign checkpoints, verify against one."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from server import audit
from server.api.deps import AdminDep, SessionDep
from server.keys import ServerKey
from server.schemas import AuditCheckpoint, AuditReport

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def _report(session: SessionDep, checkpoint: audit.Checkpoint | None) -> AuditReport:
    problems = audit.verify(session, checkpoint)
    count = session.execute(audit.count_query()).scalar_one()
    return AuditReport(ok=not problems, entries=count, problems=[str(p) for p in problems])


@router.get("/verify")
def verify_chain(principal: AdminDep, session: SessionDep) -> AuditReport:
    """Walk the chain and the event rows; name any edited, inserted or deleted row."""
    return _report(session, None)


@router.post("/verify")
def verify_against_checkpoint(
    body: AuditCheckpoint, request: Request, principal: AdminDep, session: SessionDep
) -> AuditReport:
    """The same walk, and proof that the chain still holds the checkpoint's head."""
    server_key: ServerKey = request.app.state.server_key
    try:
        checkpoint = audit.read_checkpoint(body.model_dump(), server_key.public_b64)
    except audit.CheckpointError as err:
        raise HTTPException(400, str(err)) from err
    return _report(session, checkpoint)


@router.get("/checkpoint")
def make_checkpoint(request: Request, principal: AdminDep, session: SessionDep) -> AuditCheckpoint:
    """A signed checkpoint of the chain head (409 while the chain does not verify)."""
    try:
        document = audit.checkpoint(session, request.app.state.server_key)
    except audit.ChainBrokenError as err:
        raise HTTPException(409, "audit chain does not verify: no checkpoint") from err
    return AuditCheckpoint.model_validate(document)
