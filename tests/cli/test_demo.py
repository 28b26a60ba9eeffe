"""`jifang demo` options; the full run (server, cab, four decisions) is tests/e2e/test_demo.py."""

from __future__ import annotations

from typer.testing import CliRunner

from jifang.cli import app


def test_demo_offers_a_non_interactive_run() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    assert "--no-wait" in result.output and "--model-dir" in result.output
