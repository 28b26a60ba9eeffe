"""The import from file bytes to report: read, check, plan, and (unless a dry run) apply."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from server.importer.apply import ImportSource, apply_plan
from server.importer.check import check_against_registry, check_record
from server.importer.limits import DEFAULT_LIMITS, ImportLimits
from server.importer.photos import FaceEnroller, PhotoArchive, prepare_photos
from server.importer.plan import ImportPlan, build_plan
from server.importer.read import read_records
from server.importer.registry import load_registry
from server.importer.rows import CheckedRow
from server.schemas import ImportReport, ImportRowError

logger = logging.getLogger(__name__)


def plan_import(
    session: Session,
    filename: str,
    data: bytes,
    *,
    photos: bytes | None = None,
    faces: FaceEnroller | None = None,
    default_site: str | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> ImportPlan:
    """Read and check an office file and decide every row against the registry; writes nothing.

    Photos are enrolled here, so a photo without a usable face is a row error of the plan.
    """
    records = read_records(filename, data, limits)
    archive = PhotoArchive(photos, limits)
    today = datetime.now(UTC).date()
    rows: list[CheckedRow] = []
    errors: list[ImportRowError] = []
    for raw in records:
        checked = check_record(raw, today)
        if isinstance(checked, CheckedRow):
            if default_site and not checked.site_id:
                checked = dataclasses.replace(checked, site_id=default_site)
            rows.append(checked)
        else:
            errors += checked
        if progress is not None:
            progress(1)
    # Only rows with a photo need the engine; asking for its contract loads it.
    contract = faces.contract if faces is not None and any(r.photo for r in rows) else None
    registry = load_registry(session, rows, contract.contract_id if contract else None)
    errors += check_against_registry(rows, registry)
    bad_rows = {e.row for e in errors}
    row_photos, photo_errors = prepare_photos(
        [r for r in rows if r.row not in bad_rows], registry, archive, faces
    )
    return build_plan(len(records), rows, registry, row_photos, errors + photo_errors)


def run_import(
    session: Session,
    filename: str,
    data: bytes,
    *,
    photos: bytes | None = None,
    faces: FaceEnroller | None = None,
    dry_run: bool = False,
    partial: bool = False,
    actor: str = "cli",
    default_site: str | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check, plan and (unless dry run or rejected) apply an office file in `session`.

    The caller commits when `report.applied`; on rejection nothing was written.
    """
    plan = plan_import(
        session,
        filename,
        data,
        photos=photos,
        faces=faces,
        default_site=default_site,
        limits=limits,
        progress=progress,
    )
    if not plan.applicable(partial):
        logger.warning("import of %s rejected: %d bad row(s)", filename, len(plan.rejected_rows))
        return plan.report(dry_run=dry_run, applied=False, partial=partial)
    if dry_run:
        return plan.report(dry_run=True, applied=False, partial=partial)
    apply_plan(session, plan, ImportSource(filename, data, photos), actor=actor, partial=partial)
    return plan.report(dry_run=False, applied=True, partial=partial)
