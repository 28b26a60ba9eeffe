"""Read an office file (CSV/XLSX with Chinese headers, or JSON) into raw rows with row numbers."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from xml.etree import ElementTree

from server.importer.limits import DEFAULT_LIMITS, ImportFileError, ImportLimits, open_zip

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


def read_records(filename: str, data: bytes, limits: ImportLimits = DEFAULT_LIMITS) -> list[RawRow]:
    """The records of an office file; blank sheet lines are skipped.

    Rows are read one at a time and the caps (rows, cells per row, bytes) are checked as they
    come, the header first, so a hostile file is refused before it costs memory.
    """
    lower = filename.lower()
    if lower.endswith((".xlsx", ".xlsm")):
        return _records(*_xlsx_lines(filename, data, limits), limits)
    if len(data) > limits.max_office_bytes:
        raise ImportFileError(
            f"{filename}: {len(data)} bytes, more than {limits.max_office_bytes} "
            "(JIFANG_IMPORT_MAX_OFFICE_BYTES)"
        )
    if lower.endswith(".json"):
        return _read_json(data, limits)
    if lower.endswith((".csv", ".txt")):
        return _records(filename, _csv_lines(data), limits)
    raise ImportFileError(f"{filename}: unknown format (use .csv, .xlsx or .json)")


def _width(values: Sequence[object]) -> int:
    """The number of cells up to the last non-blank one."""
    width = len(values)
    while width and text(values[width - 1]) == "":
        width -= 1
    return width


def _records(where: str, lines: Iterator[Sequence[object]], limits: ImportLimits) -> list[RawRow]:
    first = next(lines, None)
    if first is None:
        raise ImportFileError(f"{where}: empty file")
    if _width(first) > limits.max_columns:
        raise ImportFileError(
            f"{where}: row 1: {_width(first)} columns, more than {limits.max_columns} "
            "(JIFANG_IMPORT_MAX_COLUMNS)"
        )
    header = [text(h) for h in first[: _width(first)]]
    unknown = [h for h in header if h and h not in HEADERS]
    if unknown:
        raise ImportFileError(f"{where}: unknown column(s) {', '.join(unknown)}")
    missing = [FIELD_LABEL[f] for f in REQUIRED if FIELD_LABEL[f] not in header]
    if missing:
        raise ImportFileError(f"{where}: missing column(s) {', '.join(missing)}")
    records = []
    for index, values in enumerate(lines, start=2):
        if index > limits.max_rows + 1:
            raise ImportFileError(
                f"{where}: row {index}: more than {limits.max_rows} rows below the header "
                "(JIFANG_IMPORT_MAX_ROWS)"
            )
        width = _width(values)
        if width > limits.max_columns:
            raise ImportFileError(
                f"{where}: row {index}: {width} columns, more than {limits.max_columns} "
                "(JIFANG_IMPORT_MAX_COLUMNS)"
            )
        if width == 0:
            continue
        cells = {HEADERS[h]: v for h, v in zip(header, values, strict=False) if h}
        records.append(RawRow(row=index, values=cells))
    return records


def _csv_lines(data: bytes) -> Iterator[Sequence[object]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            decoded = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportFileError("CSV is neither UTF-8 nor GB18030")
    try:
        yield from csv.reader(io.StringIO(decoded, newline=""))
    except csv.Error as err:
        raise ImportFileError(f"not a readable CSV file: {err}") from err


# openpyxl raises many kinds of error on a damaged or hostile workbook (zipfile's, zlib's,
# XML parse errors, KeyError for a missing part, ValueError/TypeError for bad attributes);
# each of them means the same thing here: the workbook cannot be read.
_XLSX_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ElementTree.ParseError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
)
_CELL_REF = re.compile(r"^([A-Za-z]{1,3})")
_XLSX_MAX_ROW = 1_048_576  # the format's own bound


def _column(ref: str) -> int:
    match = _CELL_REF.match(ref)
    if match is None:
        return 0
    number = 0
    for letter in match.group(1).upper():
        number = number * 26 + ord(letter) - ord("A") + 1
    return number


class _CountingReader:
    """A ZIP member read with a byte budget: counts what inflating really yields."""

    def __init__(self, source: IO[bytes], budget: int, where: str) -> None:
        self._source = source
        self._left = budget
        self._budget = budget
        self._where = where

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        self._left -= len(chunk)
        if self._left < 0:
            raise ImportFileError(
                f"{self._where}: inflates to more than {self._budget} bytes "
                "(JIFANG_IMPORT_MAX_OFFICE_BYTES)"
            )
        return chunk


def _scan_sheet(
    archive: zipfile.ZipFile, path: str, where: str, limits: ImportLimits
) -> Iterator[int]:
    """Count the rows and cells of the sheet XML, yielding each row's number as it ends.

    openpyxl builds a whole row (every cell element) before it yields it, and pads rows to
    the declared dimension; counting here first, element by element, bounds both.
    """
    row = 0
    cells = 0
    with archive.open(path) as member:
        source = _CountingReader(member, limits.max_office_bytes, where)
        for event, element in ElementTree.iterparse(source, events=("start", "end")):
            tag = element.tag.rpartition("}")[2]
            if event == "end":
                if tag == "row":
                    element.clear()
                    yield row
                continue
            if tag == "row":
                declared = element.get("r")
                row = int(declared) if declared and declared.isdigit() else row + 1
                cells = 0
                if row > min(limits.max_rows + 1, _XLSX_MAX_ROW):
                    raise ImportFileError(
                        f"{where}: row {row}: more than {limits.max_rows} rows below the header "
                        "(JIFANG_IMPORT_MAX_ROWS)"
                    )
            elif tag == "c":
                cells += 1
                column = _column(element.get("r") or "")
                if cells > limits.max_columns or column > limits.max_columns:
                    raise ImportFileError(
                        f"{where}: row {row}: a cell beyond column {limits.max_columns} "
                        f"({element.get('r') or cells}; JIFANG_IMPORT_MAX_COLUMNS)"
                    )


T = TypeVar("T")


def _guarded(where: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except _XLSX_ERRORS as err:
        raise ImportFileError(f"{where}: not readable: {err}") from err


def _xlsx_lines(
    filename: str, data: bytes, limits: ImportLimits
) -> tuple[str, Iterator[Sequence[object]]]:
    from openpyxl import load_workbook

    archive = open_zip(
        data,
        f"{filename} (XLSX)",
        max_entries=limits.max_zip_entries,
        max_total=limits.max_office_bytes,
    )
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheet = book.worksheets[0]
        where = f"{filename}: sheet {sheet.title}"
    except Exception as err:  # openpyxl's InvalidFileException besides the _XLSX_ERRORS kinds
        raise ImportFileError(f"{filename}: not a readable XLSX workbook: {err}") from err
    return where, _sheet_rows(archive, book, sheet, where, limits)


def _sheet_rows(
    archive: zipfile.ZipFile, book: Any, sheet: Any, where: str, limits: ImportLimits
) -> Iterator[Sequence[object]]:
    """The sheet's rows, each counted in the XML before openpyxl reads it; the header first."""
    try:
        scan = _scan_sheet(archive, sheet._worksheet_path, where, limits)
        _guarded(where, lambda: next(scan, None))  # the header row is within the caps
        # The declared dimension (<dimension ref="A1:XFD3000"/>) is ignored: rows are as long
        # as their cells, not padded to it.
        sheet.reset_dimensions()
        rows = sheet.iter_rows(values_only=True)
        header = _guarded(where, lambda: next(rows, None))
        if header is None:
            return
        yield header  # checked by the caller before the rest is read
        _guarded(where, lambda: deque(scan, maxlen=0))  # the rest of the sheet is too
        while (row := _guarded(where, lambda: next(rows, None))) is not None:
            yield row
    finally:
        book.close()
        archive.close()


def _read_json(data: bytes, limits: ImportLimits) -> list[RawRow]:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImportFileError(f"not valid JSON: {err}") from err
    items = doc.get("operators") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ImportFileError('JSON must be a list of records or {"operators": [...]}')
    if len(items) > limits.max_rows:
        raise ImportFileError(
            f"{len(items)} records, more than {limits.max_rows} (JIFANG_IMPORT_MAX_ROWS)"
        )
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
