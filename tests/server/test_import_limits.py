"""Import caps against hostile files (issue 21, defects 3, 4, 5): refused, named, bounded, nothing written."""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from server.importer import ImportFileError, ImportLimits, plan_import, read_records
from server.importer.photos import PhotoArchive, PhotoError
from server.settings import ServerSettings
from server.tables import AuditEntry, Certificate, Operator, Template
from tests.server.conftest import World
from tests.server.helpers import HEADER, csv_bytes, office_rows, xlsx_bytes, zip_bytes

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
PEAK_RSS_LIMIT_MB = 300  # issue 21 acceptance: peak server RSS while a hostile file is read
GROWTH_LIMIT_MB = 64


def zip_bomb(entries: int = 40, size: int = 10 * MIB) -> bytes:
    """`entries` photos of `size` zero bytes each, deflated: about 10 KB per entry."""
    buffer = io.BytesIO()
    zeros = bytes(size)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(entries):
            archive.writestr(f"p{i}.jpg", zeros)
    return buffer.getvalue()


def _sheet_xml(book: bytes) -> tuple[str, str]:
    with zipfile.ZipFile(io.BytesIO(book)) as archive:
        name = next(n for n in archive.namelist() if n.startswith("xl/worksheets/sheet"))
        return name, archive.read(name).decode()


def _replace_part(book: bytes, name: str, text: str) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(book)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            data = text.encode() if info.filename == name else source.read(info)
            target.writestr(info.filename, data)
    return out.getvalue()


def xlsx_declaring(ref: str, rows: int = 2, far_cell: str | None = None) -> bytes:
    """A small office XLSX whose sheet declares the dimension `ref` (e.g. A1:XFD3000),
    optionally with one more blank-valued cell far down (e.g. A3000)."""
    book = xlsx_bytes(office_rows(rows))
    name, xml = _sheet_xml(book)
    xml = re.sub(r'<dimension ref="[^"]*"\s*/>', f'<dimension ref="{ref}"/>', xml)
    if far_cell is not None:
        row = far_cell.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        extra = f'<row r="{row}"><c r="{far_cell}" t="inlineStr"><is><t> </t></is></c></row>'
        xml = xml.replace("</sheetData>", extra + "</sheetData>")
    assert f'<dimension ref="{ref}"/>' in xml
    return _replace_part(book, name, xml)


def xlsx_with_extra_xml(extra_rows: str) -> bytes:
    """An office XLSX with `extra_rows` (raw <row> XML) appended to its sheet data."""
    book = xlsx_bytes(office_rows(2))
    name, xml = _sheet_xml(book)
    return _replace_part(book, name, xml.replace("</sheetData>", extra_rows + "</sheetData>"))


def wide_row(row: int, cells: int) -> str:
    """One sheet row of `cells` real inline-string cells (no cell references)."""
    return f'<row r="{row}">' + '<c t="inlineStr"><is><t>x</t></is></c>' * cells + "</row>"


def corrupt_entry(archive: bytes, name: str) -> bytes:
    """`archive` with bytes in the middle of entry `name`'s compressed data flipped."""
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        info = source.getinfo(name)
    data = bytearray(archive)
    # Local header: 30 bytes + name + extra field; the compressed data follows.
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    for offset in range(info.compress_size // 3, info.compress_size // 3 + 16):
        data[start + offset] ^= 0xFF
    return bytes(data)


def _photo_zip(n: int, method: int) -> bytes:
    buffer = io.BytesIO()
    rng = random.Random(0)
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for i in range(n):
            archive.writestr(f"p{i}.jpg", bytes(rng.randrange(64) for _ in range(4000)))
    return buffer.getvalue()


# --- the readers, without a server ---------------------------------------------------------


def test_zip_bomb_is_refused_from_the_central_directory_naming_an_entry() -> None:
    with pytest.raises(ImportFileError) as caught:
        PhotoArchive(zip_bomb(), ImportLimits(max_uncompressed_bytes=256 * MIB))
    message = str(caught.value)
    assert "photo ZIP" in message and "419430400 bytes uncompressed" in message
    assert re.search(r"largest: p\d+\.jpg", message)


def test_entry_count_is_capped() -> None:
    photos = zip_bytes({f"p{i}.jpg": b"x" for i in range(30)})
    with pytest.raises(ImportFileError, match="30 entries, more than 20"):
        PhotoArchive(photos, ImportLimits(max_zip_entries=20))


def test_inflated_bytes_are_counted_across_reads() -> None:
    # The declared total is under the cap; rows naming one photo again read it again, and
    # the bytes actually inflated are what counts.
    photos = zip_bomb(entries=3, size=MIB)
    archive = PhotoArchive(photos, ImportLimits(max_uncompressed_bytes=3 * MIB + MIB // 2))
    for i in range(3):
        assert len(archive.read(f"p{i}.jpg")) == MIB
    with pytest.raises(ImportFileError, match="at p0.jpg, the entries inflate to more than"):
        archive.read("p0.jpg")


def test_an_entry_over_the_photo_limit_is_named() -> None:
    archive = PhotoArchive(zip_bomb(entries=1, size=2 * MIB), ImportLimits(photo_max_bytes=MIB))
    with pytest.raises(PhotoError, match=r"p0\.jpg: 2097152 bytes is over the 1048576-byte limit"):
        archive.read("p0.jpg")


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_damaged_entry_is_a_photo_error_naming_it(method: int) -> None:
    archive = PhotoArchive(corrupt_entry(_photo_zip(3, method), "p1.jpg"))
    assert len(archive.read("p0.jpg")) == 4000
    with pytest.raises(PhotoError, match=r"^p1\.jpg: damaged in the photo ZIP"):
        archive.read("p1.jpg")
    assert len(archive.read("p2.jpg")) == 4000


@pytest.mark.parametrize(
    "data",
    [b"", b"not a zip at all", _photo_zip(3, zipfile.ZIP_DEFLATED)[:5000]],
    ids=["empty", "not-a-zip", "truncated"],
)
def test_an_unreadable_photo_zip_is_a_file_error(data: bytes) -> None:
    with pytest.raises(ImportFileError, match="photo ZIP is not a readable ZIP file"):
        PhotoArchive(data)


def test_a_declared_dimension_is_ignored() -> None:
    records = read_records("导出.xlsx", xlsx_declaring("A1:XFD3000"))
    assert [r.row for r in records] == [2, 3]
    assert records[0].values["certificate_no"] == office_rows(1)[0][2]


def test_a_row_with_too_many_cells_is_refused_naming_sheet_and_row() -> None:
    book = xlsx_with_extra_xml(wide_row(4, 5000))
    with pytest.raises(ImportFileError) as caught:
        read_records("导出.xlsx", book)
    assert str(caught.value).startswith("导出.xlsx: sheet Sheet: row 4: a cell beyond column 64")


def test_a_cell_beyond_the_column_cap_is_refused() -> None:
    book = xlsx_with_extra_xml('<row r="4"><c r="XFD4" t="inlineStr"><is><t>x</t></is></c></row>')
    with pytest.raises(ImportFileError, match=r"row 4: a cell beyond column 64 \(XFD4"):
        read_records("导出.xlsx", book)


def test_rows_past_the_cap_are_refused() -> None:
    rows = "".join(
        f'<row r="{r}"><c t="inlineStr"><is><t>x</t></is></c></row>' for r in range(4, 40)
    )
    with pytest.raises(ImportFileError, match="sheet Sheet: row 12: more than 10 rows"):
        read_records("导出.xlsx", xlsx_with_extra_xml(rows), ImportLimits(max_rows=10))
    far = '<row r="1000000"><c t="inlineStr"><is><t>x</t></is></c></row>'
    with pytest.raises(ImportFileError, match="row 1000000: more than 100000 rows"):
        read_records("导出.xlsx", xlsx_with_extra_xml(far))


def test_a_bad_header_is_refused_before_the_rows_are_read() -> None:
    header = ["名字", *HEADER[1:]]
    book = xlsx_bytes(office_rows(2), header)
    name, xml = _sheet_xml(book)
    # Rows far past the cap after the header: the header error comes first.
    extra = "".join(wide_row(r, 3) for r in range(4, 200))
    book = _replace_part(book, name, xml.replace("</sheetData>", extra + "</sheetData>"))
    with pytest.raises(ImportFileError, match="unknown column"):
        read_records("导出.xlsx", book, ImportLimits(max_rows=100))


def test_an_xlsx_inflating_past_the_office_cap_is_refused() -> None:
    book = xlsx_with_extra_xml(wide_row(4, 10) * 1)
    with pytest.raises(ImportFileError, match=r"导出\.xlsx \(XLSX\): its entries declare"):
        read_records("导出.xlsx", book, ImportLimits(max_office_bytes=4096))


@pytest.mark.parametrize(
    "data", [b"", b"PK\x03\x04 broken", b"not a workbook"], ids=["empty", "broken", "text"]
)
def test_an_unreadable_xlsx_is_a_file_error(data: bytes) -> None:
    with pytest.raises(ImportFileError, match="导出.xlsx"):
        read_records("导出.xlsx", data)


def test_a_damaged_sheet_in_an_xlsx_is_a_file_error() -> None:
    book = xlsx_bytes(office_rows(3))
    name, _ = _sheet_xml(book)
    with pytest.raises(ImportFileError, match="导出.xlsx"):
        read_records("导出.xlsx", corrupt_entry(book, name))


def test_csv_caps() -> None:
    rows = office_rows(12)
    with pytest.raises(ImportFileError, match=r"a\.csv: row 12: more than 10 rows"):
        read_records("a.csv", csv_bytes(rows), ImportLimits(max_rows=10))
    assert len(read_records("a.csv", csv_bytes(rows), ImportLimits(max_rows=12))) == 12
    wide = csv_bytes(rows[:2]) + ("x," * 100).encode() + b"\n"
    with pytest.raises(ImportFileError, match=r"a\.csv: row 4: 100 columns, more than 64"):
        read_records("a.csv", wide)
    with pytest.raises(ImportFileError, match=r"a\.csv: \d+ bytes, more than 1024"):
        read_records("a.csv", csv_bytes(rows), ImportLimits(max_office_bytes=1024))
    too_many = json.dumps([{"name": "x"}] * 11).encode()
    with pytest.raises(ImportFileError, match="11 records, more than 10"):
        read_records("a.json", too_many, ImportLimits(max_rows=10))


# --- memory: a fresh interpreter, peak RSS ------------------------------------------------

_PROBE = """
import json, sys
from pathlib import Path
from server.app import create_app
from server.importer import ImportFileError, ImportLimits, run_import
from server.settings import ServerSettings

work, name, photos_name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
settings = ServerSettings(
    data_dir=work / "data", database_url=f"sqlite:///{work / 'probe.db'}", model_dir=work
)
app = create_app(settings)
data = (work / name).read_bytes()
photos = (work / photos_name).read_bytes() if photos_name else None
def hwm_mb():
    # VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's across exec).
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

before = hwm_mb()
outcome = {}
with app.state.sessions() as session:
    try:
        report = run_import(
            session, name, data, photos=photos, faces=app.state.faces, dry_run=True,
            limits=ImportLimits.from_settings(settings),
        )
        outcome["errors"] = [e.message for e in report.errors]
        outcome["rows"] = report.rows
    except ImportFileError as err:
        outcome["file_error"] = str(err)
outcome["before_mb"] = before
outcome["peak_mb"] = hwm_mb()
print(json.dumps(outcome))
"""


def _probe(
    tmp_path: Path, name: str, data: bytes, photos: bytes | None = None
) -> dict[str, object]:
    (tmp_path / name).write_bytes(data)
    if photos is not None:
        (tmp_path / "photos.zip").write_bytes(photos)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path), name, "photos.zip" if photos else ""],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    peak, before = float(outcome["peak_mb"]), float(outcome["before_mb"])  # type: ignore[arg-type]
    assert peak < PEAK_RSS_LIMIT_MB, outcome
    assert peak - before < GROWTH_LIMIT_MB, outcome
    return outcome


def test_zip_bomb_dry_run_stays_small(tmp_path: Path) -> None:
    bomb = zip_bomb()
    assert len(bomb) < 600 * 1024
    rows = office_rows(40, photo=True)
    outcome = _probe(tmp_path, "导出.csv", csv_bytes(rows), bomb)
    assert "photo ZIP: its entries declare 419430400 bytes" in str(outcome["file_error"])


def test_declared_huge_dimension_stays_small(tmp_path: Path) -> None:
    # Padded to the declared width, rows 1..3000 would be 49 million cells.
    book = xlsx_declaring("A1:XFD3000", far_cell="A3000")
    assert len(book) < 16 * 1024
    outcome = _probe(tmp_path, "导出.xlsx", book)
    # Both rows read (the probe database has no sites, hence a row error each, not a file error).
    assert outcome["rows"] == 2 and "file_error" not in outcome


def test_many_real_cells_stay_small(tmp_path: Path) -> None:
    # 2,500 rows of 1,000 real cells each (37 MB of sheet XML, under the office-file cap):
    # 2.5 million cells, far past the column cap.
    cells = "<c><v>1</v></c>" * 1000
    book = xlsx_with_extra_xml("".join(f'<row r="{r}">{cells}</row>' for r in range(4, 2504)))
    outcome = _probe(tmp_path, "导出.xlsx", book)
    assert "sheet Sheet: row 4: a cell beyond column 64" in str(outcome["file_error"])


# --- through the sync route ------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, db_url: str, model_dir: Path) -> ServerSettings:
    """The test settings with a row cap the route test can pass."""
    return ServerSettings(
        data_dir=tmp_path / "data", database_url=db_url, model_dir=model_dir, import_max_rows=45
    )


def _upload(
    world: World, name: str, data: bytes, photos: bytes | None = None, **params: object
) -> httpx.Response:
    files = {"file": (name, data)}
    if photos is not None:
        files["photos"] = ("photos.zip", photos)
    return world.call("cert_office", "POST", "/api/v1/sync/operators", files=files, params=params)


def _counts(world: World) -> tuple[int, ...]:
    with world.app.state.sessions() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(t)) or 0)
            for t in (Operator, Certificate, Template, AuditEntry)
        )


def test_hostile_uploads_are_refused_and_write_nothing(world: World) -> None:
    before = _counts(world)
    rows = office_rows(40, photo=True)
    cases = [
        (("导出.csv", csv_bytes(rows), zip_bomb()), "photo ZIP: its entries declare"),
        (("导出.csv", csv_bytes(rows), b"not a zip"), "photo ZIP is not a readable ZIP file"),
        (("导出.xlsx", xlsx_with_extra_xml(wide_row(4, 5000)), None), "row 4: a cell beyond"),
        (("导出.xlsx", b"PK\x03\x04junk", None), "导出.xlsx"),
    ]
    for (name, data, photos), expected in cases:
        for dry_run in ("true", "false"):
            response = _upload(world, name, data, photos, dry_run=dry_run)
            assert response.status_code == 422, response.text
            assert expected in response.json()["detail"], response.text
    assert _counts(world) == before


def test_a_damaged_photo_is_a_row_error_naming_the_entry(world: World) -> None:
    before = _counts(world)
    rows = office_rows(3, photo=True)
    photos = corrupt_entry(_photo_zip(3, zipfile.ZIP_DEFLATED), "p1.jpg")
    response = _upload(world, "导出.csv", csv_bytes(rows), photos)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    damaged = [e for e in errors if "damaged" in e["message"]]
    assert [(e["row"], e["field"]) for e in damaged] == [(3, "照片")]
    assert damaged[0]["message"].startswith("p1.jpg: damaged in the photo ZIP")
    assert _counts(world) == before


def test_an_xlsx_declaring_a_huge_dimension_imports(world: World) -> None:
    response = _upload(world, "导出.xlsx", xlsx_declaring("A1:XFD3000"))
    assert response.status_code == 200, response.text
    assert len(response.json()["added"]) == 2


def test_the_route_uses_the_configured_caps(world: World) -> None:
    response = _upload(world, "a.csv", csv_bytes(office_rows(50)))
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "import file rejected: a.csv: row 47: more than 45 rows below the header "
        "(JIFANG_IMPORT_MAX_ROWS)"
    )
    with world.app.state.sessions() as session:
        assert plan_import(session, "a.csv", csv_bytes(office_rows(50))).records == 50
