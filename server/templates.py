"""Operator face templates as a managed resource.

Each template keeps its quality, origin (`server.domain.TemplateOrigin`) and time. Besides
the certificate photo of the office import and captures staff enrol on purpose, a start
that was AUTHORIZED under a 1:1 claim, with liveness settled by the passive check alone, adds
its evidence frame as a template (`capture_from_start`):

- quality-gated by the same rules as an ID photo (`FaceService.enroll`);
- capped at `enroll_max_templates` per operator: when full, the oldest start capture is
  replaced; the certificate photo and staff enrolments are never replaced, so an operator
  whose slots are all kept ones gets no capture;
- never from a 1:N start (the person named was not claimed), nor from one with a liveness
  doubt (the challenge was needed, or no check ran): a template from a photo attack would
  let the attacker in again.

Every change bumps the gallery (devices receive it as today) and is audited.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.codes import LivenessCheck, ReasonCode
from contract.messages import CabDecisionEvent, EmbeddingContract, Event
from server import audit, gallery
from server.bundle import evidence_path
from server.domain import TemplateOrigin
from server.faces import Enrolled, EnrollmentError, FaceService
from server.tables import Evidence, Operator, Template

logger = logging.getLogger(__name__)

CAPTURE_ACTOR = "system:templates"
"""The audit actor of automatic captures."""


class TemplateError(ValueError):
    """A template change that is not allowed; the message says why, `code` names it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CaptureOutcome:
    """What a start gave: a new template (perhaps replacing an older capture), or why not."""

    template_id: str | None = None
    replaced: str | None = None
    refused: str | None = None


def operator_template_rows(session: Session, operator_id: str, contract_id: str) -> list[Template]:
    """An operator's templates under a contract, oldest first."""
    return list(
        session.scalars(
            select(Template)
            .where(Template.operator_id == operator_id, Template.contract_id == contract_id)
            .order_by(Template.created_at, Template.id)
        )
    )


def new_template(
    operator_id: str,
    enrolled: Enrolled,
    contract: EmbeddingContract,
    origin: TemplateOrigin,
    event_id: str | None = None,
) -> Template:
    """The row of a template enrolled under the server's contract, created now."""
    return Template(
        id=uuid.uuid4().hex,
        operator_id=operator_id,
        pack_name=contract.pack_name,
        pack_version=contract.pack_version,
        contract_id=contract.contract_id,
        dim=contract.dim,
        embedding=enrolled.embedding,
        source_sha256=enrolled.source_sha256,
        quality=enrolled.quality,
        created_at=datetime.now(UTC),
        origin=origin,
        event_id=event_id,
    )


def _refused(event_id: str, why: str) -> CaptureOutcome:
    logger.info("start %s gives no template: %s", event_id, why)
    return CaptureOutcome(refused=why)


def capture_from_start(
    session: Session, faces: FaceService, event: Event, evidence_dir: Path, cap: int
) -> CaptureOutcome:
    """Add the start's evidence frame as a template of the claimed operator, or say why not.

    Changes are made in the caller's transaction (commit is the caller's)."""
    event_id = str(event.event_id)
    if not isinstance(event, CabDecisionEvent) or event.reason != ReasonCode.AUTHORIZED:
        return _refused(event_id, "not an authorized start")
    payload = event.payload
    if payload.claim is None:
        return _refused(event_id, "a 1:N start: nobody was claimed")
    if payload.liveness_by != LivenessCheck.PASSIVE:
        by = payload.liveness_by.value if payload.liveness_by else "unknown"
        return _refused(event_id, f"liveness doubt: settled by {by}, not the passive check")
    if payload.match is None or session.get(Operator, payload.match.operator_id) is None:
        return _refused(event_id, "no enrolled operator matched")
    operator_id = payload.match.operator_id
    face = next((e for e in event.evidence if e.role == "face"), None)
    path = evidence_path(evidence_dir, face.sha256) if face else None
    if face is None or path is None or session.get(Evidence, face.sha256) is None:
        return _refused(event_id, "no evidence frame stored")
    if session.scalar(select(Template.id).where(Template.event_id == event_id)) is not None:
        return _refused(event_id, "already captured")
    try:
        enrolled = faces.enroll(path.read_bytes())
    except OSError as err:
        return _refused(event_id, f"evidence frame unreadable: {err}")
    except EnrollmentError as err:
        return _refused(event_id, f"low quality: {err}")
    contract = faces.contract
    existing = operator_template_rows(session, operator_id, contract.contract_id)
    if any(t.source_sha256 == enrolled.source_sha256 for t in existing):
        return _refused(event_id, "this frame is already a template")
    replaced: Template | None = None
    if len(existing) >= cap:
        replaced = next((t for t in existing if t.origin == TemplateOrigin.START_CAPTURE), None)
        if replaced is None:
            return _refused(
                event_id, f"{len(existing)} templates (the cap) and none is a start capture"
            )
        session.delete(replaced)
        session.flush()
    template = new_template(operator_id, enrolled, contract, TemplateOrigin.START_CAPTURE, event_id)
    session.add(template)
    gallery.bump(session, [operator_id])
    audit.append(
        session,
        CAPTURE_ACTOR,
        "template.capture",
        f"operator:{operator_id}",
        {
            "template_id": template.id,
            "event_id": event_id,
            "device_id": event.device_id,
            "source_sha256": enrolled.source_sha256,
            "quality": enrolled.quality,
            "replaced": replaced.id if replaced else None,
        },
    )
    logger.info(
        "start %s: template %s for %s%s",
        event_id,
        template.id,
        operator_id,
        f" (replaces {replaced.id})" if replaced else "",
    )
    return CaptureOutcome(template.id, replaced.id if replaced else None)


def remove_template(session: Session, operator_id: str, template_id: str, actor: str) -> Template:
    """Remove one template (not the certificate photo); bump the gallery and audit it.

    Changes are made in the caller's transaction."""
    template = session.get(Template, template_id)
    if template is None or template.operator_id != operator_id:
        raise TemplateError("not_found", "no such template for this operator")
    if template.origin == TemplateOrigin.CERTIFICATE:
        raise TemplateError(
            "certificate_kept",
            "the certificate photo is always kept; a new one comes with the office import",
        )
    session.delete(template)
    gallery.bump(session, [operator_id])
    audit.append(
        session,
        actor,
        "template.remove",
        f"operator:{operator_id}",
        {
            "template_id": template.id,
            "origin": template.origin,
            "source_sha256": template.source_sha256,
            "event_id": template.event_id,
        },
    )
    return template
