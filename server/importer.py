"""Certificate-office import: CSV/XLSX with Chinese headers (plus a photo ZIP) or JSON.

An idempotent upsert keyed by certificate number. Every row is checked before anything is
written; a bad row rejects the whole batch (unless `partial`), and the batch is applied in
the caller's single transaction, so nothing is ever half-applied.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contract.codes import CertificateStatus, CodeSystem
from contract.ids import uuid7
from server import audit, gallery
from server.db import insert_rows
from server.domain import id_number_problem, mask_id_number, normalize_id_number
from server.faces import EnrollmentError, FaceService
from server.schemas import ImportReport, ImportRowError
from server.tables import Certificate, Operator, OperatorSite, Site, Template

logger = logging.getLogger(__name__)

# Office export header -> field. The English names are what JSON files use.
HEADERS: dict[str, str] = {
    "姓名": "name",
    "身份证号": "id_number",
    "证书编号": "certificate_no",
    "作业项目代号": "category",
    "发证日期": "issue_date",
    "有效期至": "expiry_date",
    "发证机关": "authority",
    "照片": "photo",
    "代号体系": "code_system",
    "作业范围": "scope",
    "证书状态": "status",
    "工作场所": "site_id",
}
REQUIRED = (
    "name",
    "id_number",
    "certificate_no",
    "category",
    "issue_date",
    "expiry_date",
    "authority",
)
FIELD_LABEL = {v: k for k, v in HEADERS.items()}
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
_CHUNK = 500


class ImportFileError(Exception):
    """The file as a whole cannot be read (format, headers, encoding)."""


@dataclass
class ImportRow:
    """One checked row."""

    row: int
    name: str
    id_number: str
    certificate_no: str
    category: str
    code_system: str
    scope: str | None
    issue_date: date
    expiry_date: date
    authority: str
    status: str
    photo: str | None
    site_id: str | None


@dataclass
class _Plan:
    rows: list[ImportRow] = field(default_factory=list)
    errors: list[ImportRowError] = field(default_factory=list)
    photos: dict[int, bytes] = field(default_factory=dict)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def read_records(filename: str, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(row number, {field: raw value}) for each record; the row number is the sheet's line."""
    lower = filename.lower()
    if lower.endswith(".json"):
        return _read_json(data)
    if lower.endswith((".xlsx", ".xlsm")):
        table = _read_xlsx(data)
    elif lower.endswith((".csv", ".txt")):
        table = _read_csv(data)
    else:
        raise ImportFileError(f"{filename}: unknown format (use .csv, .xlsx or .json)")
    if not table:
        raise ImportFileError(f"{filename}: empty file")
    header = [_text(h) for h in table[0]]
    unknown = [h for h in header if h and h not in HEADERS]
    if unknown:
        raise ImportFileError(f"{filename}: unknown column(s) {', '.join(unknown)}")
    missing = [FIELD_LABEL[f] for f in REQUIRED if FIELD_LABEL[f] not in header]
    if missing:
        raise ImportFileError(f"{filename}: missing column(s) {', '.join(missing)}")
    records = []
    for index, values in enumerate(table[1:], start=2):
        if all(_text(v) == "" for v in values):
            continue
        records.append((index, {HEADERS[h]: v for h, v in zip(header, values, strict=False) if h}))
    return records


def _read_csv(data: bytes) -> list[list[Any]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportFileError("CSV is neither UTF-8 nor GB18030")
    return [list(r) for r in csv.reader(io.StringIO(text))]


def _read_xlsx(data: bytes) -> list[list[Any]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ImportFileError(f"not a readable XLSX workbook: {err}") from err
    sheet = book.worksheets[0]
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    book.close()
    return rows


def _read_json(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImportFileError(f"not valid JSON: {err}") from err
    items = doc.get("operators") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ImportFileError('JSON must be a list of records or {"operators": [...]}')
    records = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ImportFileError(f"record {index} is not an object")
        mapped: dict[str, Any] = {HEADERS.get(str(k), str(k)): v for k, v in item.items()}
        unknown = [k for k in mapped if k not in FIELD_LABEL]
        if unknown:
            raise ImportFileError(f"record {index}: unknown field(s) {', '.join(unknown)}")
        records.append((index, mapped))
    return records


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = _text(value)
    if len(text) == 10 and text[4] == "-":
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a date (use YYYY-MM-DD)")


def check_record(
    row: int, raw: dict[str, Any], today: date
) -> tuple[ImportRow | None, list[ImportRowError]]:
    """Validate one record; errors name the row and the column."""
    errors: list[ImportRowError] = []

    def bad(field_name: str, message: str) -> None:
        errors.append(ImportRowError(row=row, field=FIELD_LABEL[field_name], message=message))

    values = {k: _text(raw.get(k)) for k in FIELD_LABEL}
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
                dates[name] = _date(raw.get(name))
            except ValueError as err:
                bad(name, str(err))
    if len(dates) == 2 and dates["expiry_date"] < dates["issue_date"]:
        bad("expiry_date", "is before 发证日期")
    status_text = values["status"]
    status = _STATUS.get(status_text.lower()) if status_text else None
    if status_text and status is None:
        bad("status", f"{status_text!r}: use 有效, 过期, 撤销 or 暂停")
    if len(values["name"]) > 64 or len(values["certificate_no"]) > 64:
        bad("name" if len(values["name"]) > 64 else "certificate_no", "is longer than 64")
    if errors:
        return None, errors
    if status is None:
        status = (
            CertificateStatus.EXPIRED if dates["expiry_date"] < today else CertificateStatus.VALID
        )
    return (
        ImportRow(
            row=row,
            name=values["name"],
            id_number=id_number,
            certificate_no=values["certificate_no"],
            category=category,
            code_system=str(code_system),
            scope=scope,
            issue_date=dates["issue_date"],
            expiry_date=dates["expiry_date"],
            authority=values["authority"],
            status=str(status),
            photo=values["photo"] or None,
            site_id=values["site_id"] or None,
        ),
        [],
    )


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


@dataclass
class _Existing:
    certs: dict[str, Certificate]
    operators: dict[str, Operator]
    sites: set[str]
    links: set[tuple[str, str]]
    templates: set[tuple[str, str]]


def _load_existing(session: Session, rows: list[ImportRow], contract_id: str | None) -> _Existing:
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
    sites = set(session.scalars(select(Site.id)).all())
    return _Existing(certs, operators, sites, links, templates)


def run_import(
    session: Session,
    filename: str,
    data: bytes,
    *,
    photos: bytes | None = None,
    faces: FaceService | None = None,
    dry_run: bool = False,
    partial: bool = False,
    actor: str = "cli",
    default_site: str | None = None,
    photo_max_bytes: int = 10 * 1024 * 1024,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check, diff and (unless dry run or rejected) apply an office file in `session`.

    The caller commits when `report.applied`; on rejection nothing was written.
    """
    records = read_records(filename, data)
    today = datetime.now(UTC).date()
    zip_file = _open_zip(photos) if photos is not None else None
    rows: list[ImportRow] = []
    errors: list[ImportRowError] = []
    for row_no, raw in records:
        row, row_errors = check_record(row_no, raw, today)
        errors += row_errors
        if row is not None:
            if default_site and not row.site_id:
                row.site_id = default_site
            rows.append(row)
        if progress is not None:
            progress(1)
    contract = faces.contract if faces is not None and any(r.photo for r in rows) else None
    existing = _load_existing(session, rows, contract.contract_id if contract else None)
    rows, more = _check_against_registry(rows, existing)
    errors += more
    photo_bytes: dict[int, tuple[str, bytes]] = {}
    enrolled: dict[int, Any] = {}
    bad_rows = {e.row for e in errors}
    for row in rows:
        if row.photo is None or row.row in bad_rows:
            continue
        problem, blob = _photo(zip_file, row.photo, photo_max_bytes)
        if problem:
            errors.append(ImportRowError(row=row.row, field="照片", message=problem))
            continue
        assert blob is not None
        sha = hashlib.sha256(blob).hexdigest()
        photo_bytes[row.row] = (sha, blob)
        op = existing.operators.get(row.id_number)
        if op is not None and (op.id, sha) in existing.templates:
            continue
        if faces is None:
            errors.append(ImportRowError(row=row.row, field="照片", message="no face engine"))
            continue
        try:
            enrolled[row.row] = faces.enroll(blob)
        except EnrollmentError as err:
            errors.append(ImportRowError(row=row.row, field="照片", message=f"{row.photo}: {err}"))
    errors.sort(key=lambda e: (e.row, e.field))
    bad_rows = {e.row for e in errors}
    report = ImportReport(
        dry_run=dry_run,
        applied=False,
        rows=len(records),
        added=[],
        changed=[],
        revoked=[],
        unchanged=[],
        templates_added=0,
        errors=errors,
        rejected_rows=sorted(bad_rows),
    )
    good = [r for r in rows if r.row not in bad_rows]
    _diff(good, existing, photo_bytes, report)
    report.templates_added = sum(1 for r in good if r.row in enrolled)
    if errors and not partial:
        report.added, report.changed, report.revoked, report.unchanged = [], [], [], []
        report.templates_added = 0
        logger.warning("import of %s rejected: %d bad row(s)", filename, len(bad_rows))
        return report
    if dry_run:
        return report
    _apply(session, good, existing, photo_bytes, enrolled, contract)
    changed_ops = {
        existing.operators[r.id_number].id if r.id_number in existing.operators else r.id_number
        for r in good
        if r.certificate_no not in report.unchanged
    }
    audit.append(
        session,
        actor,
        "sync.import",
        f"import:{hashlib.sha256(data).hexdigest()[:16]}",
        {
            "file": filename,
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "photos_sha256": hashlib.sha256(photos).hexdigest() if photos else None,
            "added": report.added,
            "changed": report.changed,
            "revoked": report.revoked,
            "unchanged": len(report.unchanged),
            "rejected_rows": report.rejected_rows,
            "templates_added": report.templates_added,
        },
    )
    report.applied = True
    logger.info(
        "import of %s: %d added, %d changed, %d revoked, %d unchanged, %d operators touched",
        filename,
        len(report.added),
        len(report.changed),
        len(report.revoked),
        len(report.unchanged),
        len(changed_ops),
    )
    return report


def _open_zip(photos: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(photos))
    except zipfile.BadZipFile as err:
        raise ImportFileError(f"photo archive is not a ZIP file: {err}") from err


def _photo(
    zip_file: zipfile.ZipFile | None, name: str, max_bytes: int
) -> tuple[str | None, bytes | None]:
    if zip_file is None:
        return f"{name}: a photo is named but no photo ZIP was given", None
    try:
        info = zip_file.getinfo(name)
    except KeyError:
        # Office archives often keep photos in a folder; a unique base name still identifies one.
        matches = [i for i in zip_file.infolist() if i.filename.rsplit("/", 1)[-1] == name]
        if len(matches) != 1:
            return f"{name}: not in the photo ZIP", None
        info = matches[0]
    if info.file_size > max_bytes:
        return f"{name}: {info.file_size} bytes is over the {max_bytes}-byte limit", None
    return None, zip_file.read(info)


def _check_against_registry(
    rows: list[ImportRow], existing: _Existing
) -> tuple[list[ImportRow], list[ImportRowError]]:
    errors: list[ImportRowError] = []
    seen_cert: dict[str, int] = {}
    names: dict[str, tuple[str, int]] = {}
    for row in rows:
        first = seen_cert.setdefault(row.certificate_no, row.row)
        if first != row.row:
            errors.append(
                ImportRowError(
                    row=row.row,
                    field="证书编号",
                    message=f"{row.certificate_no} repeats row {first}",
                )
            )
        name, name_row = names.setdefault(row.id_number, (row.name, row.row))
        if name != row.name:
            errors.append(
                ImportRowError(
                    row=row.row,
                    field="姓名",
                    message=f"{row.name} differs from {name} (row {name_row}) for the same ID number",
                )
            )
        cert = existing.certs.get(row.certificate_no)
        op = existing.operators.get(row.id_number)
        if cert is not None and (op is None or cert.operator_id != op.id):
            errors.append(
                ImportRowError(
                    row=row.row,
                    field="身份证号",
                    message=f"certificate {row.certificate_no} belongs to another operator",
                )
            )
        if row.site_id and row.site_id not in existing.sites:
            errors.append(
                ImportRowError(row=row.row, field="工作场所", message=f"unknown site {row.site_id}")
            )
    return rows, errors


def _cert_values(row: ImportRow) -> dict[str, Any]:
    return {
        "category": row.category,
        "code_system": row.code_system,
        "scope": row.scope,
        "issue_date": row.issue_date,
        "expiry_date": row.expiry_date,
        "authority": row.authority,
        "status": row.status,
    }


def _diff(
    rows: list[ImportRow],
    existing: _Existing,
    photos: dict[int, tuple[str, bytes]],
    report: ImportReport,
) -> None:
    for row in rows:
        cert = existing.certs.get(row.certificate_no)
        if cert is None:
            report.added.append(row.certificate_no)
            continue
        op = existing.operators[row.id_number]
        values = _cert_values(row)
        differs = any(getattr(cert, k) != v for k, v in values.items()) or op.name != row.name
        if row.row in photos and photos[row.row][0] != cert.photo_sha256:
            differs = True
        if row.site_id and (op.id, row.site_id) not in existing.links:
            differs = True
        if not differs:
            report.unchanged.append(row.certificate_no)
        elif row.status in (CertificateStatus.REVOKED, CertificateStatus.SUSPENDED) and (
            cert.status != row.status
        ):
            report.revoked.append(row.certificate_no)
        else:
            report.changed.append(row.certificate_no)


def _apply(
    session: Session,
    rows: list[ImportRow],
    existing: _Existing,
    photos: dict[int, tuple[str, bytes]],
    enrolled: dict[int, Any],
    contract: Any,
) -> None:
    now = datetime.now(UTC)
    new_ops: dict[str, dict[str, Any]] = {}
    renamed: dict[str, dict[str, Any]] = {}
    op_id_of: dict[str, str] = {}
    for row in rows:
        op = existing.operators.get(row.id_number)
        if op is not None:
            op_id_of[row.id_number] = op.id
            if op.name != row.name:
                renamed[op.id] = {"id": op.id, "name": row.name, "updated_at": now}
        elif row.id_number not in new_ops:
            op_id = uuid7().hex
            op_id_of[row.id_number] = op_id
            new_ops[row.id_number] = {
                "id": op_id,
                "name": row.name,
                "id_number": row.id_number,
                "id_number_masked": mask_id_number(row.id_number),
                "employee_no": None,
                "ic_card": None,
                "created_at": now,
                "updated_at": now,
            }
    if new_ops:
        insert_rows(session, Operator, list(new_ops.values()))
    if renamed:
        session.execute(update(Operator), list(renamed.values()))
    new_certs: list[dict[str, Any]] = []
    changed_certs: list[dict[str, Any]] = []
    touched: set[str] = set(renamed)
    for row in rows:
        op_id = op_id_of[row.id_number]
        values = _cert_values(row)
        sha = photos[row.row][0] if row.row in photos else None
        cert = existing.certs.get(row.certificate_no)
        if cert is None:
            new_certs.append(
                {
                    "number": row.certificate_no,
                    "operator_id": op_id,
                    **values,
                    "status_reason": "",
                    "photo_sha256": sha,
                    "updated_at": now,
                }
            )
            touched.add(op_id)
        elif any(getattr(cert, k) != v for k, v in values.items()) or (
            sha is not None and sha != cert.photo_sha256
        ):
            changed_certs.append(
                {
                    "number": row.certificate_no,
                    **values,
                    "photo_sha256": sha or cert.photo_sha256,
                    "updated_at": now,
                }
            )
            touched.add(op_id)
    if new_certs:
        insert_rows(session, Certificate, new_certs)
    if changed_certs:
        session.execute(update(Certificate), changed_certs)
    links = {
        (op_id_of[r.id_number], r.site_id)
        for r in rows
        if r.site_id and (op_id_of[r.id_number], r.site_id) not in existing.links
    }
    if links:
        insert_rows(
            session, OperatorSite, [{"operator_id": a, "site_id": b} for a, b in sorted(links)]
        )
        touched.update(a for a, _ in links)
    template_rows = []
    done: set[tuple[str, str]] = set()
    for row in rows:
        if row.row not in enrolled:
            continue
        op_id = op_id_of[row.id_number]
        result = enrolled[row.row]
        if (op_id, result.source_sha256) in done:
            continue
        done.add((op_id, result.source_sha256))
        template_rows.append(
            {
                "id": uuid.uuid4().hex,
                "operator_id": op_id,
                "pack_name": contract.pack_name,
                "pack_version": contract.pack_version,
                "contract_id": contract.contract_id,
                "dim": contract.dim,
                "embedding": result.embedding,
                "source_sha256": result.source_sha256,
                "quality": result.quality,
                "created_at": now,
            }
        )
        touched.add(op_id)
    if template_rows:
        insert_rows(session, Template, template_rows)
    gallery.bump(session, touched)
