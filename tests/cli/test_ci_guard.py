"""CI's guard: a run that reaches PostgreSQL but passes no PostgreSQL-backed test fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_REACHABLE

REPO = Path(__file__).resolve().parents[2]


def _run(selection: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JIFANG_REQUIRE_PG": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", selection],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not PG_REACHABLE, reason="PostgreSQL not reachable: the guard is inactive")
def test_run_without_pg_tests_fails_when_pg_is_reachable() -> None:
    result = _run("tests/contract/test_messages.py")
    assert result.returncode == 1, result.stdout
    assert "PostgreSQL-backed tests passed: 0" in result.stdout
    assert "no PostgreSQL-backed test passed" in result.stdout


@pytest.mark.pg
@pytest.mark.skipif(not PG_REACHABLE, reason="PostgreSQL not reachable")
def test_run_with_pg_tests_passes() -> None:
    result = _run("tests/server/test_storage.py")
    assert result.returncode == 0, result.stdout
    assert "PostgreSQL-backed tests passed: 1 of 1" in result.stdout
