"""Certificate-office sync: upload an office export (CSV, XLSX or JSON) and a photo ZIP."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from server.api.deps import CertOfficeDep, SessionDep, SettingsDep, body_limit
from server.importer import ImportFileError, ImportLimits, run_import
from server.schemas import ImportReport

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/sync", tags=["sync"])


async def _read(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, "upload too large")
    return data


@router.post(
    "/operators", response_model=ImportReport, dependencies=[body_limit("import_max_bytes")]
)
async def sync_operators(
    principal: CertOfficeDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    file: Annotated[UploadFile, File(description="office export: .csv, .xlsx or .json")],
    photos: Annotated[
        UploadFile | None, File(description="ZIP of the photos named in 照片")
    ] = None,
    dry_run: bool = Query(default=False),
    partial: bool = Query(default=False),
    site_id: str | None = Query(default=None, max_length=64),
) -> JSONResponse:
    """Upsert operators and certificates; 422 with row errors when the batch is rejected."""
    data = await _read(file, settings.import_max_bytes)
    photo_data = await _read(photos, settings.import_max_bytes) if photos is not None else None
    try:
        report = await run_in_threadpool(
            run_import,
            session,
            file.filename or "upload",
            data,
            photos=photo_data,
            faces=request.app.state.faces,
            dry_run=dry_run,
            partial=partial,
            actor=principal.actor,
            default_site=site_id,
            limits=ImportLimits.from_settings(settings),
        )
    except ImportFileError as err:
        raise HTTPException(422, f"import file rejected: {err}") from err
    if report.applied:
        session.commit()
    else:
        session.rollback()
    rejected = bool(report.errors) and not partial
    return JSONResponse(
        status_code=422 if rejected else 200, content=report.model_dump(mode="json")
    )
