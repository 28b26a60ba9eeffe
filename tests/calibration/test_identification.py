"""`jifang calibrate identification`: FPIR and FNIR of 1:N search under the gate's rule,
counted by hand on synthetic faces, the CLI on real photos, bad input, and the gate's 1:N
risk bound built on what was measured."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.attempts import Unit
from calibration.identification import build_searches, measure
from edge_agent.cab.gate import MatchPolicy, one_to_n_allowed, one_to_n_risk
from edge_agent.config import ClaimsSection
from jifang.cli import app
from models.manifest import IdentificationPoint, load_calibration, put_calibration
from models.matching import Scorer
from models.placeholder import placeholder_calibration
from tests.models import faces


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def test_rates_match_a_count_by_hand() -> None:
    basis = np.eye(8, dtype=np.float32)
    # Three people on their own axes; each has a first photo (enrolled) and near copies.
    units = [
        Unit("a", "a/0", basis[0]),
        Unit("a", "a/1", _unit_rows(basis[0] + 0.1 * basis[7])),
        Unit("b", "b/0", basis[1]),
        Unit("b", "b/1", _unit_rows(basis[1] + 0.1 * basis[7])),
        Unit("b", "b/2", _unit_rows(basis[1] + 2.0 * basis[2])),  # looks like c: a miss
        Unit("c", "c/0", basis[2]),
        Unit("c", "c/1", _unit_rows(basis[2] + 0.1 * basis[6])),
        Unit("d", "d/0", basis[5]),  # one photo only: not enrolled
    ]
    strangers = _unit_rows(
        np.stack([basis[3], basis[4], _unit_rows(basis[0] + 0.2 * basis[6]), basis[6]])
    )
    searches = build_searches(units, strangers, operators=4)
    # a, b, c enrolled and one stranger fills the fourth place; three non-mated searches.
    assert sorted(searches.gallery.labels) == ["a", "b", "c", "stranger-00000"]
    assert len(searches.mated) == 4 and len(searches.non_mated) == 3
    point = measure(searches, Scorer(), threshold=0.9, min_margin=0.05)
    assert point.operators == 4 and point.templates == 4
    assert point.false_positives == 1  # the stranger who looks like a
    assert point.fpir == pytest.approx(1 / 3)
    assert point.fnir == pytest.approx(1 / 4)  # b's photo that looks like c
    assert point.fpir < point.fpir_upper < 1.0
    with pytest.raises(ValueError, match="already enrols 3 people"):
        build_searches(units, strangers, operators=2)
    with pytest.raises(ValueError, match="cannot fill"):
        build_searches(units, strangers[:1], operators=4)
    with pytest.raises(ValueError, match="no mated search"):
        build_searches([units[0], units[2]], strangers, operators=4)


def _point(fpir_upper: float, templates: int, margin: float = 0.05) -> IdentificationPoint:
    return IdentificationPoint(
        operators=templates,
        templates=templates,
        min_margin=margin,
        mated_searches=10,
        non_mated_searches=1000,
        false_positives=0,
        fpir=0.0,
        fpir_upper=fpir_upper,
    )


def test_the_gates_1n_bound_uses_the_measured_fpir() -> None:
    claims = ClaimsSection(max_1n_risk=0.01)
    estimated = MatchPolicy(0.9, 1e-3, "site", "calibration")
    # Estimated from the per-comparison FMR: 200 templates x 1e-3 = 0.2, too high.
    assert one_to_n_risk(estimated, 200, 0.05) == pytest.approx(0.2)
    assert not one_to_n_allowed(estimated, 200, claims, 0.05)
    measured = MatchPolicy(0.9, 1e-3, "site", "calibration", identification=_point(0.003, 200))
    assert one_to_n_risk(measured, 200, 0.05) == pytest.approx(0.003)
    assert one_to_n_allowed(measured, 200, claims, 0.05)
    # A gallery twice the measured one doubles the risk; a smaller one is not credited.
    assert one_to_n_risk(measured, 400, 0.05) == pytest.approx(0.006)
    assert one_to_n_risk(measured, 50, 0.05) == pytest.approx(0.003)
    assert not one_to_n_allowed(measured, 800, claims, 0.05)
    # A gate margin below the measured one voids the measurement: back to the estimate.
    assert one_to_n_risk(measured, 200, 0.0) == pytest.approx(0.2)
    assert one_to_n_risk(MatchPolicy(0.8, None, "site", "config"), 10, 0.05) is None


def test_cli_measures_and_writes_into_the_calibration(default_pack: Path, tmp_path: Path) -> None:
    pack = tmp_path / "models" / "jifang-open"
    shutil.copytree(default_pack, pack)
    put_calibration(pack, "site", placeholder_calibration(_contract(pack)))
    data = tmp_path / "data" / "crew"
    for i, image in enumerate(faces.variants(faces.astronaut())):
        (data / "astronaut").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / "astronaut" / f"{i}.png"), image)
    strangers = tmp_path / "strangers" / "walk_ins"
    for i, image in enumerate(faces.variants(faces.cameraman())[:3]):
        (strangers / f"s{i}").mkdir(parents=True)
        cv2.imwrite(str(strangers / f"s{i}" / "0.png"), image)
    args = ["calibrate", "identification", "--pack", str(pack), "--data", str(data.parent)]
    result = CliRunner().invoke(
        app, [*args, "--strangers", str(strangers.parent), "--name", "site", "--operators", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "gallery of 2 operators" in result.output and "FPIR" in result.output
    point = load_calibration(pack).calibrations["site"].identification
    assert point is not None
    assert (point.operators, point.mated_searches, point.non_mated_searches) == (2, 3, 2)
    assert point.min_margin == 0.05 and point.fnir is not None
    revision = load_calibration(pack).revision
    missing = CliRunner().invoke(
        app, [*args, "--strangers", str(strangers.parent), "--name", "nope", "--operators", "2"]
    )
    assert missing.exit_code == 1 and "no calibration 'nope'" in missing.output
    too_few = CliRunner().invoke(
        app, [*args, "--strangers", str(strangers.parent), "--name", "site", "--operators", "9"]
    )
    assert too_few.exit_code == 1 and "cannot fill" in too_few.output
    assert load_calibration(pack).revision == revision  # nothing written on a refusal


def _contract(pack: Path) -> str:
    from models.manifest import load_manifest

    return load_manifest(pack).contract_id
