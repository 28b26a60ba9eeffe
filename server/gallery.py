"""Gallery versions and the templates each device may match against."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from contract.codes import CertificateStatus
from contract.messages import (
    CertificateInfo,
    EmbeddingContract,
    GalleryDelta,
    GalleryOperator,
    GallerySnapshot,
    GalleryTemplate,
)
from server.db import insert_rows
from server.tables import (
    Certificate,
    Counter,
    Device,
    GalleryChange,
    Operator,
    OperatorSite,
    Template,
)

logger = logging.getLogger(__name__)

GALLERY_COUNTER = "gallery"
_CHUNK = 500


def bump(session: Session, operator_ids: Iterable[str] = (), device_id: str | None = None) -> int:
    """Record changed operators (or a device's changed rules) under new versions."""
    ops = sorted(set(operator_ids))
    count = len(ops) + (1 if device_id else 0)
    if count == 0:
        return current_version(session)
    # The counter row's lock orders versions by commit: a device never sees version N+1
    # committed before N.
    top = int(
        session.execute(
            update(Counter)
            .where(Counter.name == GALLERY_COUNTER)
            .values(value=Counter.value + count)
            .returning(Counter.value)
        ).scalar_one()
    )
    now = datetime.now(UTC)
    first = top - count + 1
    rows: list[dict[str, object]] = [
        {"version": first + i, "operator_id": op, "device_id": None, "at": now}
        for i, op in enumerate(ops)
    ]
    if device_id:
        rows.append({"version": top, "operator_id": None, "device_id": device_id, "at": now})
    insert_rows(session, GalleryChange, rows)
    return top


def expire_due(session: Session, actor: str = "system") -> list[str]:
    """Mark valid certificates past their expiry date as expired, so galleries drop them."""
    from server import audit

    today = datetime.now(UTC).date()
    due = session.execute(
        select(Certificate.number, Certificate.operator_id).where(
            Certificate.status == CertificateStatus.VALID.value, Certificate.expiry_date < today
        )
    ).all()
    if not due:
        return []
    numbers = [n for n, _ in due]
    session.execute(
        update(Certificate)
        .where(Certificate.number.in_(numbers))
        .values(status=CertificateStatus.EXPIRED.value, updated_at=datetime.now(UTC))
    )
    bump(session, {op for _, op in due})
    audit.append(session, actor, "certificate.expired", "certificates", {"numbers": numbers})
    logger.info("%d certificate(s) expired", len(numbers))
    return numbers


def current_version(session: Session) -> int:
    """The newest gallery version."""
    return int(
        session.execute(select(Counter.value).where(Counter.name == GALLERY_COUNTER)).scalar_one()
    )


def _rule_clause(device: Device) -> object:
    clauses = []
    for rule in device.accepted_categories:
        clause = and_(
            Certificate.category == rule["category"],
            Certificate.code_system == rule.get("code_system", "tsg2019"),
        )
        scope = rule.get("scope")
        if scope:
            # A certificate restricted to another kind of crane does not cover this one.
            clause = and_(clause, or_(Certificate.scope.is_(None), Certificate.scope == scope))
        clauses.append(clause)
    return or_(*clauses)


def authorized_certificates(
    session: Session, device: Device, operator_ids: Sequence[str] | None = None
) -> dict[str, list[Certificate]]:
    """Valid certificates of a matching category held by operators of the device's site."""
    if not device.accepted_categories:
        return {}
    query = (
        select(Certificate)
        .join(OperatorSite, OperatorSite.operator_id == Certificate.operator_id)
        .where(
            OperatorSite.site_id == device.site_id,
            Certificate.status == CertificateStatus.VALID.value,
            _rule_clause(device),  # type: ignore[arg-type]
        )
        .order_by(Certificate.operator_id, Certificate.number)
    )
    found: dict[str, list[Certificate]] = {}
    if operator_ids is None:
        for cert in session.scalars(query):
            found.setdefault(cert.operator_id, []).append(cert)
        return found
    for start in range(0, len(operator_ids), _CHUNK):
        chunk = list(operator_ids[start : start + _CHUNK])
        for cert in session.scalars(query.where(Certificate.operator_id.in_(chunk))):
            found.setdefault(cert.operator_id, []).append(cert)
    return found


def _operators(
    session: Session, certs: dict[str, list[Certificate]], contract: EmbeddingContract
) -> tuple[list[GalleryOperator], list[GalleryTemplate]]:
    ids = sorted(certs)
    operators: list[GalleryOperator] = []
    templates: list[GalleryTemplate] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for op in session.scalars(
            select(Operator).where(Operator.id.in_(chunk)).order_by(Operator.id)
        ):
            operators.append(
                GalleryOperator(
                    operator_id=op.id,
                    display_name=op.name,
                    id_number_masked=op.id_number_masked,
                    employee_no=op.employee_no,
                    ic_card=op.ic_card,
                    certificates=tuple(
                        CertificateInfo(
                            certificate_no=c.number,
                            category=c.category,
                            code_system=c.code_system,
                            scope=c.scope,
                            issue_date=c.issue_date,
                            expiry_date=c.expiry_date,
                            status=c.status,
                        )
                        for c in certs[op.id]
                    ),
                )
            )
        for tpl in session.scalars(
            select(Template)
            .where(Template.operator_id.in_(chunk), Template.contract_id == contract.contract_id)
            .order_by(Template.operator_id, Template.id)
        ):
            templates.append(
                GalleryTemplate(
                    template_id=tpl.id,
                    operator_id=tpl.operator_id,
                    embedding=tuple(tpl.embedding),
                    quality=tpl.quality,
                    source_sha256=tpl.source_sha256,
                )
            )
    return operators, templates


def snapshot(session: Session, device: Device, contract: EmbeddingContract) -> GallerySnapshot:
    """Everything the device may match against, at the current version."""
    version = current_version(session)
    operators, templates = _operators(session, authorized_certificates(session, device), contract)
    return GallerySnapshot(
        device_id=device.id,
        version=version,
        contract=contract,
        generated_at=datetime.now(UTC),
        operators=tuple(operators),
        templates=tuple(templates),
    )


def delta(
    session: Session, device: Device, since: int, contract: EmbeddingContract
) -> GalleryDelta:
    """What changed for this device after version `since`."""
    version = current_version(session)
    changes = session.execute(
        select(GalleryChange.operator_id, GalleryChange.device_id).where(
            GalleryChange.version > since, GalleryChange.version <= version
        )
    ).all()
    if any(dev == device.id for _, dev in changes):
        # The device's own rules or site changed: resend its whole set and retract the rest.
        certs = authorized_certificates(session, device)
        removed = sorted(set(session.scalars(select(Operator.id)).all()) - set(certs))
    else:
        changed = sorted({op for op, _ in changes if op is not None})
        certs = authorized_certificates(session, device, changed)
        removed = [op for op in changed if op not in certs]
    operators, templates = _operators(session, certs, contract)
    removed_templates: list[str] = []
    for start in range(0, len(removed), _CHUNK):
        removed_templates += session.scalars(
            select(Template.id).where(Template.operator_id.in_(removed[start : start + _CHUNK]))
        ).all()
    return GalleryDelta(
        device_id=device.id,
        from_version=since,
        to_version=version,
        contract=contract,
        generated_at=datetime.now(UTC),
        upsert_operators=tuple(operators),
        upsert_templates=tuple(templates),
        removed_operator_ids=tuple(removed),
        removed_template_ids=tuple(sorted(removed_templates)),
    )
