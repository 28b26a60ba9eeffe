"""A pack's distractor cohort: what `jifang train adapter` stores, how the engine loads it,
how calibration, `jifang eval attempts` and the cab gate then score (AS-norm), and that a
normalised threshold never meets raw cosines (or another cohort's scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from contract.codes import ScoreKind
from contract.messages import MatchInfo
from jifang.cli import app
from models.engine import FaceEngine
from models.errors import ModelError
from models.gallery import Gallery
from models.manifest import Calibration, load_calibration, load_manifest
from models.matching import (
    MIN_DISTRACTORS,
    ScoreNorm,
    Scorer,
    identity_key,
    template_score,
)
from models.runtime.cohort import load_cohort
from models.types import Task
from tests.conftest import cohort_rows_for_tests
from tests.models import faces
from training.adapt import (
    AdapterConfig,
    AdapterProvenance,
    FitSet,
    build_adapted_pack,
    cohort_rows,
    fit_adapter,
)

DIM = 128


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


_rows = cohort_rows_for_tests


def test_the_engine_loads_the_cohort_and_the_contract_is_the_base_one(
    cohort_pack: Path, default_pack: Path
) -> None:
    engine = FaceEngine(cohort_pack, threads=1)
    manifest = load_manifest(cohort_pack)
    entry = manifest.file(Task.COHORT)
    assert entry is not None and entry.wrapper == "as_norm_cohort"
    assert entry.commercial_use is False  # follows the data it came from
    assert engine.cohort is not None and engine.cohort.sha256 == entry.sha256
    assert engine.cohort.embeddings.shape == (60, DIM)
    # Normalisation does not change embeddings: galleries of the base pack stay valid.
    assert manifest.contract_id == load_manifest(default_pack).contract_id
    assert FaceEngine(default_pack, threads=1).cohort is None


def test_bad_cohort_files_are_refused_naming_the_file(default_pack: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cohort.npz"
    rows = _rows(60)
    np.savez(bad, embeddings=rows.embeddings * 2.0, identities=np.array(rows.identities))
    with pytest.raises(ModelError, match="cohort.npz: embeddings are not unit rows"):
        load_cohort(bad)
    np.savez(bad, embeddings=rows.embeddings[:10], identities=np.array(rows.identities[:10]))
    with pytest.raises(ModelError, match="cohort.npz: .*needs at least 50"):
        load_cohort(bad)
    np.savez(bad, vectors=rows.embeddings)
    with pytest.raises(ModelError, match="cohort.npz: not a cohort file"):
        load_cohort(bad)
    bad.write_bytes(b"not numpy")
    with pytest.raises(ModelError, match="cohort.npz: not a cohort file"):
        load_cohort(bad)
    # Rows of another dimension cannot go into a pack.
    with pytest.raises(ModelError, match="the pack makes 128-d"):
        build_adapted_pack(
            default_pack,
            None,
            tmp_path,
            "x",
            AdapterProvenance(source="t"),
            cohort=_rows(60, dim=64),
        )
    assert not (tmp_path / "x").exists()


def test_cohort_rows_are_one_face_per_person_as_the_new_pack_embeds_them() -> None:
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(2 * 60, 32)).astype(np.float32)
    labels = [f"set/p{i // 2}" for i in range(2 * 60)]
    linear = fit_adapter(raw, labels, AdapterConfig())
    rows = cohort_rows(FitSet(raw, labels, 0), linear)
    assert rows is not None and len(rows.identities) == 60
    np.testing.assert_allclose(rows.embeddings, linear.apply(raw[::2]), atol=1e-6)
    assert rows.identities[5] == identity_key("set/p5")
    few = FitSet(raw[: 2 * (MIN_DISTRACTORS - 1)], labels[: 2 * (MIN_DISTRACTORS - 1)], 0)
    assert cohort_rows(few, linear) is None


def test_scorer_normalises_against_the_other_operators_and_the_distractors() -> None:
    rng = np.random.default_rng(1)
    distractors = _unit_rows(rng.normal(size=(60, 16)))
    gallery = Gallery(16)
    templates = {name: _unit_rows(rng.normal(size=(2, 16))) for name in ("a", "b", "c")}
    for name, rows in templates.items():
        gallery.add(name, rows)
    probe = _unit_rows(templates["b"][0] + 0.3 * rng.normal(size=16))
    norm = ScoreNorm(distractors, top=5)
    scorer = Scorer(norm)
    others = np.concatenate([templates["a"], templates["c"]])
    expected = norm.score(templates["b"], probe, np.concatenate([others, distractors]))
    assert scorer.kind == ScoreKind.AS_NORM
    assert scorer.claim(gallery, "b", probe) == pytest.approx(expected)
    found = scorer.search(gallery, probe, k=3)
    assert [m.label for m in found.matches][0] == "b"
    assert found.matches[0].score == pytest.approx(expected)
    assert [m.score for m in found.matches] == sorted(
        (m.score for m in found.matches), reverse=True
    )
    raw = Scorer()
    assert raw.kind == ScoreKind.COSINE
    assert raw.claim(gallery, "b", probe) == pytest.approx(template_score(templates["b"], probe))
    with pytest.raises(ValueError, match="no template"):
        scorer.claim(gallery, "nobody", probe)


def test_calibration_and_wire_scores_keep_to_their_scale() -> None:
    common = {"target_fmr": 1e-3, "genuine_pairs": 1, "impostor_pairs": 3000}
    contract = "0" * 32
    with pytest.raises(ValidationError, match="cosine threshold must be in -1..1"):
        Calibration(threshold=2.5, contract_id=contract, **common)
    with pytest.raises(ValidationError, match="must name its cohort"):
        Calibration(threshold=2.5, score=ScoreKind.AS_NORM, contract_id=contract, **common)
    Calibration(
        threshold=2.5,
        score=ScoreKind.AS_NORM,
        cohort_sha256="a" * 64,
        contract_id=contract,
        **common,
    )
    MatchInfo(operator_id="x", score=7.5, threshold=2.5, margin=0.0, score_kind=ScoreKind.AS_NORM)
    with pytest.raises(ValidationError, match="outside ±1 for a cosine score"):
        MatchInfo(operator_id="x", score=1.5, threshold=0.5, margin=0.0)
    with pytest.raises(ValidationError):
        MatchInfo(
            operator_id="x", score=float("nan"), threshold=2.5, margin=0.0, score_kind="as_norm"
        )


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_calibrate_then_eval_attempts_use_the_cohort(cohort_pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    result = _invoke(
        "calibrate", "threshold", "--pack", str(cohort_pack), "--data", str(data),
        "--target-fmr", "0.2", "--bootstrap", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "as_norm against the pack's cohort (1 cohort face" in result.output  # type: ignore[attr-defined]
    cal = load_calibration(cohort_pack).calibrations["tiny"]
    engine = FaceEngine(cohort_pack, threads=1)
    assert engine.cohort is not None
    assert cal.score == ScoreKind.AS_NORM and cal.cohort_sha256 == engine.cohort.sha256
    assert "AS-norm" in cal.method
    out = tmp_path / "attempts.json"
    args = ["eval", "attempts", "--pack", str(cohort_pack), "--data", str(data)]
    result = _invoke(*args, "--templates", "1", "--json", str(out))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    record = json.loads(out.read_text())["sets"]["tiny"]
    assert record["score"] == "as_norm"
    assert record["cohort_faces"] == 59 and record["cohort_excluded"] == 1
    result = _invoke(*args, "--templates", "1", "--json", str(out), "--no-normalise")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads(out.read_text())["sets"]["tiny"]["score"] == "cosine"
