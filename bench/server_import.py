"""Certificate-office import speed: 100,000 operator rows without photos, rows/s.

Runs on PostgreSQL (a fresh schema) when it is reachable, else on SQLite in a temporary
folder; the clock covers reading the CSV, checking every row, the diff and the one commit.

    python bench/server_import.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path

from _common import write_result

from contract.citizen_id import make_gb11643

PG_URL = os.environ.get("JIFANG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
HEADER = [
    "姓名",
    "身份证号",
    "证书编号",
    "作业项目代号",
    "发证日期",
    "有效期至",
    "发证机关",
    "工作场所",
]


def _id_number(serial: int) -> str:
    # Region, birth date spread over 1960-1999, then a 3-digit sequence: unique per serial.
    year = 1960 + serial // 1000 % 40
    region = f"{370100 + serial // 40000 % 100:06d}"
    return make_gb11643(region, f"{year}0{1 + serial % 9}1{serial % 9}", serial)


def office_csv(rows: int) -> bytes:
    """An office export of `rows` operators, each with one certificate."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for i in range(rows):
        writer.writerow(
            [
                f"操作员{i}",
                _id_number(i),
                f"T37{i:010d}",
                "Q2(桥式起重机)" if i % 2 else "N1",
                "2024-03-01",
                "2028-02-29",
                "山东省市场监督管理局",
                "s",
            ]
        )
    return out.getvalue().encode("utf-8-sig")


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from server import audit
    from server.db import prepared_engine, session_factory
    from server.importer import run_import
    from server.settings import ServerSettings
    from server.tables import Enterprise, Site

    data = office_csv(args.rows)
    tmp = tempfile.TemporaryDirectory()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL) if _pg_reachable() else None
    if admin is not None:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    try:
        settings = ServerSettings(data_dir=Path(tmp.name), database_url=url)
        audit_key = audit.ensure_key(settings)
        engine = prepared_engine(settings, audit_key)
        with Session(engine) as session:
            session.add(Enterprise(id="e", name="bench", credit_code=""))
            session.flush()
            session.add(Site(id="s", enterprise_id="e", name="bench", address=""))
            session.commit()
        start = time.perf_counter()
        with session_factory(engine, audit_key)() as session:
            report = run_import(session, "office.csv", data)
            if report.errors:
                raise RuntimeError(f"bench file has bad rows: {report.errors[:3]}")
            session.commit()
        elapsed = time.perf_counter() - start
        engine.dispose()
    finally:
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        tmp.cleanup()
    print(f"{engine.dialect.name}: {len(report.added)} added in {elapsed:.2f} s")
    write_result("server_import", {"rows": args.rows, "rows_per_s": round(args.rows / elapsed, 1)})


if __name__ == "__main__":
    main()
