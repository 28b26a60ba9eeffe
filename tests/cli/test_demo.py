"""`jifang demo` runs on the embedded defaults."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from jifang.cli import app


def test_demo_runs_end_to_end(default_pack: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--model-dir", str(default_pack.parent)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("astronaut" in line and "best operator-astronaut" in line for line in lines)
    assert any("cameraman" in line and "best operator-cameraman" in line for line in lines)
    assert any("empty seat" in line and "NO_FACE" in line for line in lines)
