"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
import shutil

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from server.api.deps import METRICS_READER, PUBLIC, SessionDep
from server.migrate import MIGRATIONS
from server.settings import ServerSettings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])


@router.get("/healthz", dependencies=[PUBLIC])
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", dependencies=[PUBLIC])
def readyz(session: SessionDep, request: Request) -> dict[str, str]:
    """The database answers, the evidence folder is writable and the data folder has room.

    A plain `def`: it runs in the threadpool, so a locked database never stalls the loop.
    """
    settings: ServerSettings = request.app.state.settings
    retry = {"Retry-After": str(settings.busy_retry_after_s)}
    try:
        revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as err:
        logger.warning("not ready: %s", err)
        raise HTTPException(503, "database unavailable", headers=retry) from err
    evidence = settings.evidence_dir
    try:
        evidence.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(evidence).free
    except OSError as err:
        raise HTTPException(503, "evidence storage unavailable", headers=retry) from err
    if free < settings.readyz_min_free_bytes:
        logger.warning(
            "not ready: %d bytes free under %s (minimum %d)",
            free,
            evidence,
            settings.readyz_min_free_bytes,
        )
        raise HTTPException(503, "data folder almost full", headers=retry)
    return {"status": "ready", "schema": str(revision), "migrations": MIGRATIONS.name}


@router.get("/metrics", dependencies=[METRICS_READER])
def metrics(request: Request) -> Response:
    """Prometheus text format (device ids, backlog): admins or the configured metrics token."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
