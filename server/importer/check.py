"""Check raw rows: each becomes a typed checked row or errors that name its row and column."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import date, datetime

from contract.codes import CertificateStatus, CodeSystem
from server.domain import id_number_problem, mask_id_number, normalize_id_number
from server.importer.read import FIELD_LABEL, REQUIRED, RawRow, text
from server.importer.registry import Registry
from server.importer.rows import CheckedRow
from server.schemas import ImportRowError

logger = logging.getLogger(__name__)

_CATEGORY = re.compile(r"^([A-Z][A-Z0-9]{0,7})\s*(?:[(（]\s*([^()（）]{1,64}?)\s*[)）])?$")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y%m%d")
_STATUS = {
    "有效": CertificateStatus.VALID,
    "valid": CertificateStatus.VALID,
    "过期": CertificateStatus.EXPIRED,
    "expired": CertificateStatus.EXPIRED,
    "撤销": CertificateStatus.REVOKED,
    "吊销": CertificateStatus.REVOKED,
    "revoked": CertificateStatus.REVOKED,
    "暂停": CertificateStatus.SUSPENDED,
    "暂扣": CertificateStatus.SUSPENDED,
    "suspended": CertificateStatus.SUSPENDED,
}
_CODE_SYSTEM = {
    "": CodeSystem.TSG2019,
    "2019": CodeSystem.TSG2019,
    "tsg2019": CodeSystem.TSG2019,
    "新": CodeSystem.TSG2019,
    "旧": CodeSystem.LEGACY,
    "legacy": CodeSystem.LEGACY,
}
_MAX_TEXT = 64  # the width of the name and number columns


def _date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    cell = text(value)
    if len(cell) == 10 and cell[4] == "-":
        try:
            return date.fromisoformat(cell)
        except ValueError:
            pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cell, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{cell!r} is not a date (use YYYY-MM-DD)")


def check_record(raw: RawRow, today: date) -> CheckedRow | list[ImportRowError]:
    """Validate one record: the checked row, or its errors (each names the row and column)."""
    errors: list[ImportRowError] = []

    def bad(field_name: str, message: str) -> None:
        errors.append(ImportRowError(row=raw.row, field=FIELD_LABEL[field_name], message=message))

    values = {k: text(raw.values.get(k)) for k in FIELD_LABEL}
    for name in REQUIRED:
        if not values[name]:
            bad(name, "is empty")
    id_number = normalize_id_number(values["id_number"])
    if id_number and (problem := id_number_problem(id_number)):
        bad("id_number", f"{mask_id_number(id_number)}: {problem}")
    category, scope = values["category"], values["scope"] or None
    if category:
        match = _CATEGORY.match(category.upper() if category.isascii() else category)
        if match is None:
            bad("category", f"{category!r} is not a category code such as Q2 or N1")
        else:
            category = match.group(1)
            scope = scope or match.group(2)
    code_system = _CODE_SYSTEM.get(values["code_system"].lower())
    if code_system is None:
        bad("code_system", f"{values['code_system']!r}: use 2019 or 旧")
    dates: dict[str, date] = {}
    for name in ("issue_date", "expiry_date"):
        if values[name]:
            try:
                dates[name] = _date(raw.values.get(name))
            except ValueError as err:
                bad(name, str(err))
    if len(dates) == 2 and dates["expiry_date"] < dates["issue_date"]:
        bad("expiry_date", "is before 发证日期")
    status_text = values["status"]
    status = _STATUS.get(status_text.lower()) if status_text else None
    if status_text and status is None:
        bad("status", f"{status_text!r}: use 有效, 过期, 撤销 or 暂停")
    if len(values["name"]) > _MAX_TEXT or len(values["certificate_no"]) > _MAX_TEXT:
        too_long = "name" if len(values["name"]) > _MAX_TEXT else "certificate_no"
        bad(too_long, f"is longer than {_MAX_TEXT}")
    if errors or code_system is None:
        return errors
    if status is None:
        status = (
            CertificateStatus.EXPIRED if dates["expiry_date"] < today else CertificateStatus.VALID
        )
    return CheckedRow(
        row=raw.row,
        name=values["name"],
        id_number=id_number,
        certificate_no=values["certificate_no"],
        category=category,
        code_system=code_system,
        scope=scope,
        issue_date=dates["issue_date"],
        expiry_date=dates["expiry_date"],
        authority=values["authority"],
        status=status,
        photo=values["photo"] or None,
        site_id=values["site_id"] or None,
    )


def check_against_registry(rows: Sequence[CheckedRow], registry: Registry) -> list[ImportRowError]:
    """Errors a row has only next to the rest of the file and the registry."""
    errors: list[ImportRowError] = []
    seen_cert: dict[str, int] = {}
    names: dict[str, tuple[str, int]] = {}
    for row in rows:
        first = seen_cert.setdefault(row.certificate_no, row.row)
        if first != row.row:
            errors.append(
                ImportRowError(
                    row=row.row,
                    field=FIELD_LABEL["certificate_no"],
                    message=f"{row.certificate_no} repeats row {first}",
                )
            )
        name, name_row = names.setdefault(row.id_number, (row.name, row.row))
        if name != row.name:
            errors.append(
                ImportRowError(
                    row=row.row,
                    field=FIELD_LABEL["name"],
                    message=f"{row.name} differs from {name} (row {name_row}) for the same ID number",
                )
            )
        cert = registry.certs.get(row.certificate_no)
        op = registry.operators.get(row.id_number)
        if cert is not None and (op is None or cert.operator_id != op.id):
            errors.append(
                ImportRowError(
                    row=row.row,
                    field=FIELD_LABEL["id_number"],
                    message=f"certificate {row.certificate_no} belongs to another operator",
                )
            )
        if row.site_id and row.site_id not in registry.sites:
            errors.append(
                ImportRowError(
                    row=row.row, field=FIELD_LABEL["site_id"], message=f"unknown site {row.site_id}"
                )
            )
    return errors
