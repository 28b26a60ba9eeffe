"""The cab gate on normalised (AS-norm) scores: it authorizes on a threshold no cosine could
clear, and a normalised calibration without its very cohort fails closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.codes import EventKind, ReasonCode, ScoreKind
from edge_agent.cab.gate import resolve_policy
from edge_agent.cab.sources import ReplayFeed
from edge_agent.cab.types import GateFault
from edge_agent.config import GateSection, ModelsSection
from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import Calibration, CalibrationBlock
from models.matching import calibrated_scorer


def _as_norm(contract_id: str, threshold: float, sha: str) -> Calibration:
    return Calibration(
        threshold=threshold,
        score=ScoreKind.AS_NORM,
        cohort_sha256=sha,
        target_fmr=1e-3,
        genuine_pairs=10,
        impostor_pairs=3000,
        contract_id=contract_id,
    )


def test_a_normalised_calibration_without_its_cohort_fails_closed(cohort_pack: Path) -> None:
    engine = FaceEngine(cohort_pack, threads=1)
    assert engine.cohort is not None
    block = CalibrationBlock(
        calibrations={"site": _as_norm(engine.contract_id, 3.0, engine.cohort.sha256)}
    )
    gate, models = GateSection(), ModelsSection(calibration="site")
    policy = resolve_policy(gate, models, block, engine.contract_id, engine.cohort)
    assert policy.scorer.kind == ScoreKind.AS_NORM and policy.threshold == 3.0
    with pytest.raises(GateFault, match="has no cohort") as fault:
        resolve_policy(gate, models, block, engine.contract_id, None)
    assert fault.value.reason == ReasonCode.MODEL_MISSING
    other = _as_norm(engine.contract_id, 3.0, "b" * 64)
    with pytest.raises(GateFault, match="recalibrate"):
        resolve_policy(
            gate, models, CalibrationBlock(calibrations={"site": other}), engine.contract_id,
            engine.cohort,
        )  # fmt: skip
    with pytest.raises(ModelError, match="no cohort"):
        calibrated_scorer(block.calibrations["site"], None)


def test_the_gate_authorizes_on_normalised_scores(
    cohort_pack: Path, tmp_path: Path, signer, frames
) -> None:
    from edge_agent.cab.agent import build_gate
    from edge_agent.config import parse_config
    from tests.edge_agent.conftest import base_config

    engine = FaceEngine(cohort_pack, threads=1)
    assert engine.cohort is not None

    def start(calibration: Calibration) -> tuple[object, list[object]]:
        config = parse_config(base_config(tmp_path, signer.public_b64))
        parts = build_gate(
            config, engine=engine, calibrations=CalibrationBlock(calibrations={"test": calibration})
        )
        try:
            parts.gate.cache.install_snapshot(signer.snapshot())
            parts.gate.cache.install_config(signer.config())
            decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
            events = [parts.outbox.parse(p) for p in parts.outbox.due(100)]
            return decision, events
        finally:
            parts.close()

    # 1.5 is beyond any cosine: only a normalised score can clear it.
    decision, events = start(_as_norm(engine.contract_id, 1.5, engine.cohort.sha256))
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail  # type: ignore[attr-defined]
    match = [e for e in events if e.kind == EventKind.CAB_DECISION][-1].payload.match  # type: ignore[attr-defined]
    assert match.score_kind == ScoreKind.AS_NORM and match.score >= match.threshold == 1.5
    decision, _ = start(_as_norm(engine.contract_id, 1.5, "c" * 64))
    assert decision.reason == ReasonCode.MODEL_MISSING  # type: ignore[attr-defined]
