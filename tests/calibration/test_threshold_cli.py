"""`jifang calibrate threshold` on real photos through the default pack's ONNX sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from jifang.cli import app
from models.engine import FaceEngine
from models.manifest import load_calibration, verify_pack
from tests.models import faces

SUMMARY_KEYS = {"genuine_pairs", "impostor_pairs", "fnmr_at_fmr", "threshold_at_fmr"}


@pytest.fixture
def pack(default_pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "jifang-open"
    shutil.copytree(default_pack, target)
    return target


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """Two people, four photos each: 12 genuine and 16 impostor pairs."""
    return faces.write_set(tmp_path / "data" / "tiny")


def _run(*args: str):  # noqa: ANN202 - click Result
    return CliRunner().invoke(app, ["calibrate", "threshold", *args])


def test_threshold_writes_named_calibrations_json_and_report(
    pack: Path, tiny: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "t.json", tmp_path / "report"
    # 16 impostor pairs support FMR 0.2 (rule of three: 15 needed), nothing lower.
    result = _run(
        "--pack",
        str(pack),
        "--data",
        str(tiny.parent),
        "--target-fmr",
        "0.2",
        "--name",
        "site-a",
        "--json",
        str(out),
        "--report",
        str(report),
        "--bootstrap",
        "50",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert set(summary) == {"sets"} and set(summary["sets"]) == {"tiny"}
    tiny_row = summary["sets"]["tiny"]
    assert set(tiny_row) == SUMMARY_KEYS
    assert (tiny_row["genuine_pairs"], tiny_row["impostor_pairs"]) == (12, 16)
    assert set(tiny_row["threshold_at_fmr"]) == {"2e-1"}  # 1e-2.. are not claimed
    assert "1e-3: not claimed (16 impostor pairs, needs 3000)" in result.output

    block = load_calibration(pack)
    cal = block.calibrations["site-a"]
    assert block.revision == 1
    assert cal.threshold == tiny_row["threshold_at_fmr"]["2e-1"]
    assert cal.fnmr_at_target == tiny_row["fnmr_at_fmr"]["2e-1"]
    assert (cal.genuine_pairs, cal.impostor_pairs, cal.images, cal.identities) == (12, 16, 8, 2)
    assert "tiny" in cal.data and "Clopper-Pearson" in cal.method
    assert cal.fnmr_ci is not None and cal.fnmr_ci[0] <= cal.fnmr_at_target <= cal.fnmr_ci[1]
    assert cal.threshold_ci is not None
    verify_pack(pack)  # the calibration's contract matches the pack's
    assert FaceEngine(pack).calibration.calibrations["site-a"].threshold == cal.threshold

    text = (report / "report.md").read_text()
    assert "Clopper-Pearson" in text and "bootstrap over identities" in text
    for png in ("tiny-det.png", "tiny-scores.png"):
        assert f"]({png})" in text
        assert cv2.imread(str(report / png)) is not None
    assert json.loads((report / "report.json").read_text())["sets"]["tiny"]["identities"] == 2

    again = _run(
        "--pack",
        str(pack),
        "--data",
        str(tiny),
        "--target-fmr",
        "0.2",
        "--name",
        "site-b",
        "--bootstrap",
        "0",
    )
    assert again.exit_code == 0, again.output
    block = load_calibration(pack)
    assert block.revision == 2 and set(block.calibrations) == {"site-a", "site-b"}
    assert block.calibrations["site-b"].threshold == cal.threshold
    assert block.calibrations["site-b"].threshold_ci is None  # no bootstrap asked for


def test_threshold_refuses_an_fmr_the_pairs_cannot_support(pack: Path, tiny: Path) -> None:
    result = _run("--pack", str(pack), "--data", str(tiny), "--bootstrap", "0")
    assert result.exit_code == 1
    assert "16 impostor pairs cannot support FMR 1e-3 (needs 3000)" in result.output
    assert not (pack / "calibration.yaml").exists()


def test_threshold_bad_input_is_a_clear_error_and_writes_nothing(
    pack: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("--pack", str(pack), "--data", str(empty))
    assert result.exit_code == 1 and "holds no labelled face sets" in result.output

    lone = tmp_path / "lone"
    faces.write_set(lone)
    shutil.rmtree(lone / "cameraman")
    result = _run("--pack", str(pack), "--data", str(lone), "--target-fmr", "0.2")
    assert result.exit_code == 1 and "need at least two identities" in result.output

    broken = faces.write_set(tmp_path / "broken")
    (broken / "astronaut" / "9.jpg").write_bytes(b"not a jpeg")
    result = _run("--pack", str(pack), "--data", str(broken), "--target-fmr", "0.2")
    assert result.exit_code == 1
    assert "1 unreadable image(s)" in result.output and "9.jpg" in result.output

    two = tmp_path / "two"
    faces.write_set(two / "a")
    faces.write_set(two / "b")
    result = _run("--pack", str(pack), "--data", str(two), "--name", "x")
    assert result.exit_code == 1 and "--name needs one set" in result.output
    result = _run("--pack", str(pack), "--data", str(two), "--set", "nope")
    assert result.exit_code == 1 and "no set named 'nope'" in result.output
    assert not (pack / "calibration.yaml").exists()


@pytest.mark.slow
def test_threshold_report_for_every_shared_set(
    shared_dir: Path, pack: Path, tmp_path: Path
) -> None:
    """The internal sets: one report section per set; the thresholds stay in a tmp pack."""
    data = shared_dir / "data" / "faces"
    if not data.is_dir():
        pytest.skip(f"{data} not present")
    out, report = tmp_path / "t.json", tmp_path / "report"
    result = _run(
        "--pack",
        str(pack),
        "--data",
        str(data),
        "--json",
        str(out),
        "--report",
        str(report),
        "--no-write",
    )
    assert result.exit_code == 0, result.output
    sets = [p.name for p in sorted(data.iterdir()) if p.is_dir()]
    summary = json.loads(out.read_text())["sets"]
    text = (report / "report.md").read_text()
    for name in sets:
        assert name in summary, name
        assert f"## Set `{name}`" in text
        assert (report / f"{name}-det.png").is_file()
    assert summary["cjk_singletons"]["genuine_pairs"] == 0
    assert "1e-5" in summary["cjk_singletons"]["threshold_at_fmr"]  # 1.1 M impostor pairs
