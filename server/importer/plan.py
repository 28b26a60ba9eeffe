"""One plan per row, decided once: what the import will write, shown by a dry run, done by apply.

"Changed" has one rule: a row is changed exactly when applying it writes something. These
fields count (`FieldChange.field`):

- the certificate's own fields (`CERT_FIELDS`), and `photo_sha256` when the row names a photo
  other than the stored one (a row without a photo keeps the stored one: not a change);
- `name`: the operator's name differs from the registry's (the operator row is renamed);
- `site_id`: the row links its operator to a site it is not linked to yet (a link is added);
- `template`: the row's photo gives the operator a template it lacks under the engine's
  contract (e.g. after a model-pack change), although the photo itself is unchanged.

A row whose certificate is new is `CREATE`; a changed row that moves its certificate to
revoked or suspended is `REVOKE`; any other changed row is `UPDATE`; the rest `UNCHANGED`.
Name and site-link changes are listed on every row that implies them and written once:
`Writes` holds the deduplicated writes that apply performs. A photo that two rows give one
operator yields one template, on the first of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from contract.codes import CertificateStatus
from contract.ids import uuid7
from server.importer.photos import NewTemplate, RowPhoto
from server.importer.registry import Registry
from server.importer.rows import CheckedRow
from server.schemas import ImportReport, ImportRowError
from server.tables import Certificate

logger = logging.getLogger(__name__)

CERT_FIELDS = (
    "category",
    "code_system",
    "scope",
    "issue_date",
    "expiry_date",
    "authority",
    "status",
)
"""Certificate columns the office file owns; a difference in any one updates the row."""

PHOTO_FIELD = "photo_sha256"
NAME_FIELD = "name"
SITE_FIELD = "site_id"
TEMPLATE_FIELD = "template"
_WITHDRAWN = (CertificateStatus.REVOKED, CertificateStatus.SUSPENDED)


class RowAction(StrEnum):
    """What the import does with one row."""

    CREATE = "create"
    UPDATE = "update"
    REVOKE = "revoke"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FieldChange:
    """One field the import changes: registry value (None: absent) -> file value."""

    field: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class RowPlan:
    """The decision for one good row, with everything apply needs to carry it out."""

    row: int
    action: RowAction
    data: CheckedRow
    operator_id: str
    new_operator: bool
    photo_sha256: str | None  # the certificate's photo hash once applied
    template: NewTemplate | None
    changes: tuple[FieldChange, ...]

    @property
    def certificate_no(self) -> str:
        """The certificate number the row is keyed by."""
        return self.data.certificate_no

    def changes_field(self, name: str) -> bool:
        """Whether the plan changes field `name`."""
        return any(c.field == name for c in self.changes)

    @property
    def updates_certificate(self) -> bool:
        """Whether an existing certificate row is rewritten."""
        return self.action is not RowAction.CREATE and any(
            c.field in CERT_FIELDS or c.field == PHOTO_FIELD for c in self.changes
        )

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view for previews (no ID number: only the certificate and its changes)."""
        return {
            "row": self.row,
            "certificate_no": self.certificate_no,
            "action": str(self.action),
            "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in self.changes],
        }


@dataclass(frozen=True)
class Writes:
    """The deduplicated writes the plan makes, in the order apply makes them."""

    new_operators: tuple[RowPlan, ...]  # the first row of each new operator
    renames: tuple[tuple[str, str], ...]  # (operator id, new name)
    new_certificates: tuple[RowPlan, ...]
    updated_certificates: tuple[RowPlan, ...]
    links: tuple[tuple[str, str], ...]  # (operator id, site id)
    templates: tuple[tuple[str, NewTemplate], ...]  # (operator id, template)
    touched_operators: frozenset[str]  # whose gallery entries get a new version


@dataclass(frozen=True)
class PlanSummary:
    """The plan in counts and certificate numbers: what a dry run shows and apply reports."""

    records: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    revoked: tuple[str, ...]
    unchanged: tuple[str, ...]
    rejected_rows: tuple[int, ...]
    operators_created: int
    operators_renamed: int
    certificates_created: int
    certificates_updated: int
    links_added: int
    templates_added: int


@dataclass(frozen=True)
class ImportPlan:
    """The whole import, decided: one RowPlan per good row, the bad rows' errors, the writes."""

    records: int
    rows: tuple[RowPlan, ...]
    errors: tuple[ImportRowError, ...]
    writes: Writes

    @property
    def rejected_rows(self) -> tuple[int, ...]:
        """Row numbers with at least one error, ascending."""
        return tuple(sorted({e.row for e in self.errors}))

    def applicable(self, partial: bool) -> bool:
        """Whether the good rows may be applied: no bad rows, or `partial` allows skipping them."""
        return not self.errors or partial

    def numbers(self, action: RowAction) -> tuple[str, ...]:
        """Certificate numbers of the rows with `action`, in file order."""
        return tuple(r.certificate_no for r in self.rows if r.action is action)

    def summary(self) -> PlanSummary:
        """Counts of what the plan does."""
        w = self.writes
        return PlanSummary(
            records=self.records,
            added=self.numbers(RowAction.CREATE),
            changed=self.numbers(RowAction.UPDATE),
            revoked=self.numbers(RowAction.REVOKE),
            unchanged=self.numbers(RowAction.UNCHANGED),
            rejected_rows=self.rejected_rows,
            operators_created=len(w.new_operators),
            operators_renamed=len(w.renames),
            certificates_created=len(w.new_certificates),
            certificates_updated=len(w.updated_certificates),
            links_added=len(w.links),
            templates_added=len(w.templates),
        )

    def report(self, *, dry_run: bool, applied: bool, partial: bool) -> ImportReport:
        """The API/CLI report of this plan; a rejected batch lists no planned changes."""
        rejected = not self.applicable(partial)
        s = self.summary()
        return ImportReport(
            dry_run=dry_run,
            applied=applied,
            rows=self.records,
            added=[] if rejected else list(s.added),
            changed=[] if rejected else list(s.changed),
            revoked=[] if rejected else list(s.revoked),
            unchanged=[] if rejected else list(s.unchanged),
            templates_added=0 if rejected else s.templates_added,
            errors=list(self.errors),
            rejected_rows=list(s.rejected_rows),
        )


def _as_text(value: str | date | None) -> str | None:
    return None if value is None else str(value)


def _cert_changes(row: CheckedRow, cert: Certificate, photo: RowPhoto | None) -> list[FieldChange]:
    changes = []
    for name in CERT_FIELDS:
        old, new = getattr(cert, name), getattr(row, name)
        if old != new:
            changes.append(FieldChange(name, _as_text(old), _as_text(new)))
    if photo is not None and photo.sha256 != cert.photo_sha256:
        changes.append(FieldChange(PHOTO_FIELD, cert.photo_sha256, photo.sha256))
    return changes


def _row_plan(
    row: CheckedRow,
    registry: Registry,
    photo: RowPhoto | None,
    new_ids: dict[str, str],
) -> RowPlan:
    op = registry.operators.get(row.id_number)
    changes: list[FieldChange] = []
    if op is None:
        operator_id = new_ids.setdefault(row.id_number, uuid7().hex)
    else:
        operator_id = op.id
        if op.name != row.name:
            changes.append(FieldChange(NAME_FIELD, op.name, row.name))
    cert = registry.certs.get(row.certificate_no)
    if cert is not None:
        changes[:0] = _cert_changes(row, cert, photo)
    if row.site_id and (operator_id, row.site_id) not in registry.links:
        changes.append(FieldChange(SITE_FIELD, None, row.site_id))
    template = photo.template if photo is not None else None
    if template is not None:
        changes.append(FieldChange(TEMPLATE_FIELD, None, template.enrolled.source_sha256))
    if cert is None:
        action = RowAction.CREATE
    elif not changes:
        action = RowAction.UNCHANGED
    elif row.status in _WITHDRAWN and cert.status != row.status:
        action = RowAction.REVOKE
    else:
        action = RowAction.UPDATE
    return RowPlan(
        row=row.row,
        action=action,
        data=row,
        operator_id=operator_id,
        new_operator=op is None,
        photo_sha256=(
            photo.sha256 if photo is not None else cert.photo_sha256 if cert is not None else None
        ),
        template=template,
        changes=tuple(changes),
    )


def _writes(rows: Sequence[RowPlan]) -> Writes:
    new_operators: dict[str, RowPlan] = {}
    renames: dict[str, str] = {}
    links: dict[tuple[str, str], None] = {}
    templates: dict[tuple[str, str], NewTemplate] = {}
    for plan in rows:
        if plan.new_operator:
            new_operators.setdefault(plan.operator_id, plan)
        if plan.changes_field(NAME_FIELD):
            renames[plan.operator_id] = plan.data.name
        if plan.changes_field(SITE_FIELD) and plan.data.site_id is not None:
            links[(plan.operator_id, plan.data.site_id)] = None
        if plan.template is not None:
            key = (plan.operator_id, plan.template.enrolled.source_sha256)
            templates.setdefault(key, plan.template)
    return Writes(
        new_operators=tuple(new_operators.values()),
        renames=tuple(renames.items()),
        new_certificates=tuple(r for r in rows if r.action is RowAction.CREATE),
        updated_certificates=tuple(r for r in rows if r.updates_certificate),
        links=tuple(sorted(links)),
        templates=tuple((op_id, t) for (op_id, _), t in templates.items()),
        touched_operators=frozenset(
            r.operator_id for r in rows if r.action is not RowAction.UNCHANGED
        ),
    )


def build_plan(
    records: int,
    rows: Sequence[CheckedRow],
    registry: Registry,
    photos: Mapping[int, RowPhoto],
    errors: Sequence[ImportRowError],
) -> ImportPlan:
    """Decide every good row once against the registry snapshot; rows with errors are left out."""
    bad_rows = {e.row for e in errors}
    new_ids: dict[str, str] = {}
    plans = tuple(
        _row_plan(row, registry, photos.get(row.row), new_ids)
        for row in rows
        if row.row not in bad_rows
    )
    return ImportPlan(
        records=records,
        rows=plans,
        errors=tuple(sorted(errors, key=lambda e: (e.row, e.field))),
        writes=_writes(plans),
    )
