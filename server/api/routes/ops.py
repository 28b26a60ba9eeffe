"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.api.deps import METRICS_READER, PUBLIC, SessionDep
from server.migrate import MIGRATIONS

logger = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/healthz", dependencies=[PUBLIC])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=[PUBLIC])
def readyz(session: SessionDep, request: Request) -> dict[str, str]:
    """The database answers and the evidence folder is writable."""
    try:
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as err:
        logger.warning("not ready: %s", err)
        raise HTTPException(503, "database unavailable") from err
    evidence = request.app.state.settings.evidence_dir
    try:
        evidence.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HTTPException(503, "evidence storage unavailable") from err
    return {"status": "ready", "schema": str(revision), "migrations": MIGRATIONS.name}


@router.get("/metrics", dependencies=[METRICS_READER])
def metrics(request: Request) -> Response:
    """Prometheus text format (device ids, backlog): admins or the configured metrics token."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
