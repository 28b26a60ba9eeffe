"""Carry out an ImportPlan in the caller's transaction: exactly its writes, nothing re-decided."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from server import audit, gallery
from server.db import insert_rows
from server.domain import TemplateOrigin, mask_id_number
from server.importer.plan import ImportPlan, RowPlan
from server.tables import Certificate, Operator, OperatorSite, Template

logger = logging.getLogger(__name__)


class PlanNotApplicable(Exception):
    """The plan has bad rows and the caller did not allow a partial import."""


@dataclass(frozen=True)
class ImportSource:
    """The files an import came from, as the audit chain records them."""

    filename: str
    data: bytes
    photos: bytes | None = None


@dataclass(frozen=True)
class ApplyResult:
    """How many rows of each table apply wrote."""

    operators_created: int
    operators_renamed: int
    certificates_created: int
    certificates_updated: int
    links_added: int
    templates_added: int
    gallery_version: int


def _cert_values(plan: RowPlan) -> dict[str, object]:
    row = plan.data
    return {
        "number": row.certificate_no,
        "category": row.category,
        "code_system": str(row.code_system),
        "scope": row.scope,
        "issue_date": row.issue_date,
        "expiry_date": row.expiry_date,
        "authority": row.authority,
        "status": str(row.status),
        "photo_sha256": plan.photo_sha256,
    }


def _write(session: Session, plan: ImportPlan, now: datetime) -> ApplyResult:
    w = plan.writes
    insert_rows(
        session,
        Operator,
        [
            {
                "id": p.operator_id,
                "name": p.data.name,
                "id_number": p.data.id_number,
                "id_number_masked": mask_id_number(p.data.id_number),
                "employee_no": None,
                "ic_card": None,
                "created_at": now,
                "updated_at": now,
            }
            for p in w.new_operators
        ],
    )
    if w.renames:
        session.execute(
            update(Operator),
            [{"id": op_id, "name": name, "updated_at": now} for op_id, name in w.renames],
        )
    insert_rows(
        session,
        Certificate,
        [
            {
                **_cert_values(p),
                "operator_id": p.operator_id,
                "status_reason": "",
                "updated_at": now,
            }
            for p in w.new_certificates
        ],
    )
    if w.updated_certificates:
        session.execute(
            update(Certificate),
            [{**_cert_values(p), "updated_at": now} for p in w.updated_certificates],
        )
    insert_rows(session, OperatorSite, [{"operator_id": a, "site_id": b} for a, b in w.links])
    insert_rows(
        session,
        Template,
        [
            {
                "id": uuid.uuid4().hex,
                "operator_id": op_id,
                "pack_name": t.contract.pack_name,
                "pack_version": t.contract.pack_version,
                "contract_id": t.contract.contract_id,
                "dim": t.contract.dim,
                "embedding": t.enrolled.embedding,
                "source_sha256": t.enrolled.source_sha256,
                "quality": t.enrolled.quality,
                "created_at": now,
                "origin": TemplateOrigin.CERTIFICATE,
                "event_id": None,
            }
            for op_id, t in w.templates
        ],
    )
    version = gallery.bump(session, w.touched_operators)
    return ApplyResult(
        operators_created=len(w.new_operators),
        operators_renamed=len(w.renames),
        certificates_created=len(w.new_certificates),
        certificates_updated=len(w.updated_certificates),
        links_added=len(w.links),
        templates_added=len(w.templates),
        gallery_version=version,
    )


def apply_plan(
    session: Session, plan: ImportPlan, source: ImportSource, *, actor: str, partial: bool
) -> ApplyResult:
    """Write the plan and its audit entry in `session`; the caller commits."""
    if not plan.applicable(partial):
        raise PlanNotApplicable(f"{len(plan.rejected_rows)} bad row(s) and not a partial import")
    result = _write(session, plan, datetime.now(UTC))
    summary = plan.summary()
    file_sha = hashlib.sha256(source.data).hexdigest()
    audit.append(
        session,
        actor,
        "sync.import",
        f"import:{file_sha[:16]}",
        {
            "file": source.filename,
            "file_sha256": file_sha,
            "photos_sha256": hashlib.sha256(source.photos).hexdigest() if source.photos else None,
            "added": list(summary.added),
            "changed": list(summary.changed),
            "revoked": list(summary.revoked),
            "unchanged": len(summary.unchanged),
            "rejected_rows": list(summary.rejected_rows),
            "templates_added": summary.templates_added,
        },
    )
    logger.info(
        "import of %s: %d added, %d changed, %d revoked, %d unchanged, %d operators touched",
        source.filename,
        len(summary.added),
        len(summary.changed),
        len(summary.revoked),
        len(summary.unchanged),
        len(plan.writes.touched_operators),
    )
    return result
