"""Read an office file (CSV/XLSX with Chinese headers, or JSON) into raw rows with row numbers."""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
FIELD_LABEL: dict[str, str] = {v: k for k, v in HEADERS.items()}


class ImportFileError(Exception):
    """The file as a whole cannot be read (format, headers, encoding)."""


@dataclass(frozen=True)
class RawRow:
    """One record as read: its row number (the sheet's line, or the JSON index) and raw cells."""

    row: int
    # Cells keep the type the reader gave (str from CSV, date/int/float from XLSX, any JSON
    # value), so check.py can accept a real XLSX date cell as a date.
    values: Mapping[str, object]


def text(value: object) -> str:
    """A cell as stripped text; an integral float (XLSX numbers) loses its '.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def read_records(filename: str, data: bytes) -> list[RawRow]:
    """The records of an office file; blank sheet lines are skipped."""
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
    header = [text(h) for h in table[0]]
    unknown = [h for h in header if h and h not in HEADERS]
    if unknown:
        raise ImportFileError(f"{filename}: unknown column(s) {', '.join(unknown)}")
    missing = [FIELD_LABEL[f] for f in REQUIRED if FIELD_LABEL[f] not in header]
    if missing:
        raise ImportFileError(f"{filename}: missing column(s) {', '.join(missing)}")
    records = []
    for index, values in enumerate(table[1:], start=2):
        if all(text(v) == "" for v in values):
            continue
        cells = {HEADERS[h]: v for h, v in zip(header, values, strict=False) if h}
        records.append(RawRow(row=index, values=cells))
    return records


def _read_csv(data: bytes) -> list[Sequence[object]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            decoded = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportFileError("CSV is neither UTF-8 nor GB18030")
    return [list(r) for r in csv.reader(io.StringIO(decoded))]


def _read_xlsx(data: bytes) -> list[Sequence[object]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ImportFileError(f"not a readable XLSX workbook: {err}") from err
    sheet = book.worksheets[0]
    rows: list[Sequence[object]] = [list(r) for r in sheet.iter_rows(values_only=True)]
    book.close()
    return rows


def _read_json(data: bytes) -> list[RawRow]:
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
        mapped: dict[str, object] = {HEADERS.get(str(k), str(k)): v for k, v in item.items()}
        unknown = [k for k in mapped if k not in FIELD_LABEL]
        if unknown:
            raise ImportFileError(f"record {index}: unknown field(s) {', '.join(unknown)}")
        records.append(RawRow(row=index, values=mapped))
    return records
