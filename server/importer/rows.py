"""The checked row: what `check` hands to the registry snapshot, the plan and the photos."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from contract.codes import CertificateStatus, CodeSystem


@dataclass(frozen=True)
class CheckedRow:
    """One row that passed its own checks, in the registry's terms."""

    row: int
    name: str
    id_number: str
    certificate_no: str
    category: str
    code_system: CodeSystem
    scope: str | None
    issue_date: date
    expiry_date: date
    authority: str
    status: CertificateStatus
    photo: str | None
    site_id: str | None
