"""`jifang train recognizer|liveness` through typer, as training/cli.py will register them."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from models.manifest import verify_pack
from models.types import Task
from tests.training.test_train_liveness import _generated
from tests.training.test_train_recognizer import _generated_people

pytest.importorskip("torch")

from training.commands import register  # noqa: E402


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_train_recognizer_command(app: typer.Typer, tmp_path: Path, default_pack: Path) -> None:
    data = tmp_path / "chips"
    _generated_people(data, 5)
    out = tmp_path / "site-pack"
    result = CliRunner().invoke(
        app,
        [
            "recognizer",
            "--data",
            str(data),
            "--out",
            str(out),
            "--base-pack",
            str(default_pack),
            "--aligned",
            "--epochs",
            "1",
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--val-fraction",
            "0.4",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "epoch before" in result.output and "epoch      0" in result.output
    assert f"wrote {out}" in result.output
    assert verify_pack(out).file(Task.RECOGNIZER) is not None
    assert (tmp_path / "site-pack.run" / "args.json").is_file()


def test_train_liveness_command(app: typer.Typer, tmp_path: Path, default_pack: Path) -> None:
    data = _generated(tmp_path / "d", per_class=6)
    out = tmp_path / "cli-pack"
    result = CliRunner().invoke(
        app,
        [
            "liveness",
            "--data",
            str(data),
            "--out",
            str(out),
            "--base-pack",
            str(default_pack),
            "--epochs",
            "1",
            "--input-size",
            "32",
            "--batch-size",
            "4",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and (out / "liveness.onnx").is_file()


def test_errors_exit_non_zero_with_the_reason(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(
        app, ["recognizer", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and "not a folder" in bad.output
    unknown = runner.invoke(
        app,
        ["liveness", "--data", str(tmp_path), "--out", str(tmp_path / "x"), "--no-such-option"],
    )
    assert unknown.exit_code == 2
    assert not (tmp_path / "x").exists()
