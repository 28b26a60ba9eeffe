"""What the registry already holds for the operators and certificates a file names."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.importer.rows import CheckedRow
from server.tables import Certificate, Operator, OperatorSite, Site, Template

logger = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) query: stays under every driver's bound-parameter limit


@dataclass(frozen=True)
class Registry:
    """A read-only snapshot of the registry rows an import can touch."""

    certs: dict[str, Certificate]  # by certificate number
    operators: dict[str, Operator]  # by full ID number
    sites: frozenset[str]
    links: frozenset[tuple[str, str]]  # (operator id, site id)
    templates: frozenset[tuple[str, str]]  # (operator id, photo sha256) under the contract


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def load_registry(
    session: Session, rows: Sequence[CheckedRow], contract_id: str | None
) -> Registry:
    """Load the certificates, operators, links and templates (of `contract_id`) rows refer to."""
    numbers = sorted({r.certificate_no for r in rows})
    id_numbers = sorted({r.id_number for r in rows})
    certs: dict[str, Certificate] = {}
    for chunk in _chunks(numbers):
        certs.update(
            (c.number, c)
            for c in session.scalars(select(Certificate).where(Certificate.number.in_(chunk)))
        )
    operators: dict[str, Operator] = {}
    for chunk in _chunks(id_numbers):
        operators.update(
            (o.id_number, o)
            for o in session.scalars(select(Operator).where(Operator.id_number.in_(chunk)))
        )
    op_ids = sorted({o.id for o in operators.values()} | {c.operator_id for c in certs.values()})
    links: set[tuple[str, str]] = set()
    templates: set[tuple[str, str]] = set()
    for chunk in _chunks(op_ids):
        links.update(
            (a, b)
            for a, b in session.execute(
                select(OperatorSite.operator_id, OperatorSite.site_id).where(
                    OperatorSite.operator_id.in_(chunk)
                )
            )
        )
        if contract_id is not None:
            templates.update(
                (a, b)
                for a, b in session.execute(
                    select(Template.operator_id, Template.source_sha256).where(
                        Template.operator_id.in_(chunk), Template.contract_id == contract_id
                    )
                )
            )
    sites = frozenset(session.scalars(select(Site.id)).all())
    return Registry(certs, operators, sites, frozenset(links), frozenset(templates))
