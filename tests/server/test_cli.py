"""`jifang server ...` commands on SQLite and PostgreSQL, honouring JIFANG_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from jifang.cli import app as cli
from server.db import make_engine
from server.tables import Certificate, Site
from server.threaded import free_port
from tests.server.helpers import csv_bytes, office_rows

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """JIFANG_DATABASE_URL and JIFANG_DATA_DIR for the commands."""
    values = {"JIFANG_DATABASE_URL": db_url, "JIFANG_DATA_DIR": str(tmp_path / "data")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def _site(db_url: str) -> None:
    from server.tables import Enterprise

    engine = make_engine(db_url)
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        session.add(Enterprise(id="ent-1", name="济南重工", credit_code=""))
        session.flush()
        session.add(Site(id="site-1", enterprise_id="ent-1", name="一号厂区", address=""))
        session.commit()
    engine.dispose()


def test_migrate_creates_the_schema(env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["server", "migrate"])
    assert result.exit_code == 0, result.output
    assert "schema at revision 0007" in result.output
    again = CliRunner().invoke(cli, ["server", "migrate"])
    assert again.exit_code == 0


def test_import_dry_run_then_apply(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["server", "migrate"]).exit_code == 0
    _site(env["JIFANG_DATABASE_URL"])
    path = tmp_path / "office.csv"
    path.write_bytes(csv_bytes(office_rows(6)))
    dry = runner.invoke(cli, ["server", "import", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "added: 6" in dry.output and "dry run: nothing changed" in dry.output
    done = runner.invoke(cli, ["server", "import", str(path)])
    assert done.exit_code == 0, done.output
    assert "imported 6 row(s)" in done.output
    again = runner.invoke(cli, ["server", "import", str(path), "--dry-run"])
    assert "added: 0" in again.output and "unchanged: 6" in again.output
    engine = make_engine(env["JIFANG_DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Certificate)) == 6
    engine.dispose()
    verify = runner.invoke(cli, ["server", "audit", "verify"])
    assert verify.exit_code == 0, verify.output


def test_import_rejects_a_bad_row_by_number(env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["server", "migrate"]).exit_code == 0
    _site(env["JIFANG_DATABASE_URL"])
    rows = office_rows(3)
    rows[2][1] = "123"
    path = tmp_path / "office.csv"
    path.write_bytes(csv_bytes(rows))
    result = runner.invoke(cli, ["server", "import", str(path)])
    assert result.exit_code == 1
    assert "row 4, 身份证号:" in result.output
    assert "nothing was imported" in result.output
    partial = runner.invoke(cli, ["server", "import", str(path), "--partial"])
    assert partial.exit_code == 0 and "added: 2" in partial.output


def test_user_add(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        cli, ["server", "user", "add", "root", "--role", "admin", "--password", "longenough"]
    )
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(
        cli, ["server", "user", "add", "dev", "--role", "device", "--password", "longenough"]
    )
    assert bad.exit_code == 2


@pytest.mark.slow
def test_run_serves_on_sqlite_in_the_data_dir(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "JIFANG_DATA_DIR": str(tmp_path / "data"),
        "JIFANG_PORT": str(port),
        "JIFANG_MODEL_DIR": str(model_dir),
        "PYTHONPATH": str(REPO),
    }
    env.pop("JIFANG_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jifang", "server", "run"]
        if (REPO / "jifang" / "__main__.py").exists()
        else [sys.executable, "-c", "from jifang.cli import main; main()", "server", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        proc.stdout.read().decode() if proc.stdout else "no output"
                    ) from None
                time.sleep(0.2)
        assert response.status_code == 200
        assert (tmp_path / "data" / "jifang.db").exists()
        assert (tmp_path / "data" / "keys" / "server_ed25519.pem").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_migrations_match_the_tables(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from server.migrate import upgrade
    from server.tables import Base

    engine = make_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
