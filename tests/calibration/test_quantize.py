"""`jifang calibrate quantize`: a real INT8 recognizer, measured, gated and loadable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.quantize import QuantizationRefused, SetComparison, fnmr_gate
from jifang.cli import app
from models.engine import FaceEngine
from models.manifest import load_calibration, verify_pack
from models.types import Task
from tests.models import faces

FAST = ["--calibration-chips", "8", "--timing-runs", "10", "--threads", "1"]


@pytest.fixture
def pack(default_pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "jifang-open"
    shutil.copytree(default_pack, target)
    return target


def test_quantize_writes_an_int8_pack_that_the_engine_loads(
    pack: Path, tmp_path: Path, astronaut_bgr: np.ndarray
) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    out, report = tmp_path / "models" / "jifang-open-int8", tmp_path / "q.json"
    # The FMR to judge at comes from the pack's named calibration (16 impostor pairs: 0.2).
    calibrated = CliRunner().invoke(
        app,
        [
            "calibrate",
            "threshold",
            "--pack",
            str(pack),
            "--data",
            str(data),
            "--target-fmr",
            "0.2",
            "--name",
            "site",
            "--bootstrap",
            "0",
        ],
    )
    assert calibrated.exit_code == 0, calibrated.output
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "quantize",
            "--pack",
            str(pack),
            "--data",
            str(data),
            "--calibration",
            "site",
            "--json",
            str(report),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote INT8 pack {out}" in result.output
    figures = json.loads(report.read_text())
    assert figures["fp32_ms_per_face"] > 0 and figures["int8_ms_per_face"] > 0
    assert figures["speedup"] == pytest.approx(
        figures["fp32_ms_per_face"] / figures["int8_ms_per_face"], rel=1e-2
    )
    assert figures["sets"]["tiny"]["fnmr_int8"] is not None
    assert figures["cosine_to_fp32"]["min"] > 0.99

    manifest = verify_pack(out)
    fp32_engine, int8_engine = FaceEngine(pack), FaceEngine(out)
    recognizer = manifest.file(Task.RECOGNIZER)
    assert recognizer is not None and recognizer.path == "recognizer_int8.onnx"
    assert manifest.name == "jifang-open-int8"
    assert int8_engine.contract_id != fp32_engine.contract_id
    assert int8_engine.calibration.calibrations["tiny"].contract_id == int8_engine.contract_id
    assert load_calibration(out).calibrations["tiny"].target_fmr == 0.2
    assert "site" not in int8_engine.calibration.calibrations  # made for the fp32 contract
    face = fp32_engine.detect(astronaut_bgr)[0]
    a = fp32_engine.embed(astronaut_bgr, face)
    b = int8_engine.embed(astronaut_bgr, face)
    assert FaceEngine.compare(a, b) > 0.99

    # The edge agent loads the INT8 pack by name from its model directory, with the
    # calibration the quantizer wrote for the new contract.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from contract.auth import public_key_b64
    from edge_agent.cab.agent import build_gate
    from edge_agent.config import parse_config
    from tests.edge_agent.conftest import base_config

    server_key = public_key_b64(Ed25519PrivateKey.generate().public_key())
    config = parse_config(
        base_config(
            tmp_path,
            server_key,
            models={"dir": str(out.parent), "pack": out.name, "calibration": "tiny"},
            gate={"target_fmr": 0.2},
        )
    )
    parts = build_gate(config)
    try:
        assert parts.engine is not None and parts.engine.contract_id == int8_engine.contract_id
        assert parts.calibration_fault is None
    finally:
        parts.close()

    again = CliRunner().invoke(
        app,
        [
            "calibrate",
            "quantize",
            "--pack",
            str(pack),
            "--data",
            str(data),
            "--target-fmr",
            "0.2",
            *FAST,
        ],
    )
    assert again.exit_code == 1 and "exists (use --force to replace it)" in again.output


def test_quantize_refuses_when_accuracy_cannot_be_measured(pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    out, report = tmp_path / "int8", tmp_path / "q.json"
    # 16 impostor pairs cannot support FMR 1e-3, so the FNMR change is unknown: fail closed.
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "quantize",
            "--pack",
            str(pack),
            "--data",
            str(data),
            "--out",
            str(out),
            "--json",
            str(report),
            *FAST,
        ],
    )
    assert result.exit_code == 1
    assert "cannot be measured, so no INT8 pack is written" in result.output
    figures = json.loads(report.read_text())
    assert figures["fnmr_delta"] is None and figures["pack"] is None
    assert figures["refused"].startswith("no set has both genuine pairs")
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".int8")] == []


def _cmp(name: str, fp32: float | None, int8: float | None) -> SetComparison:
    return SetComparison(name, 100, 5000, fp32, int8, 0.9, 0.9)


def test_fnmr_gate_judges_the_worst_set_against_the_limit() -> None:
    sets = [_cmp("a", 0.10, 0.105), _cmp("b", 0.20, 0.19), _cmp("c", None, None)]
    assert fnmr_gate(sets, 0.01) == pytest.approx(0.005)
    with pytest.raises(QuantizationRefused, match=r"set a rises 0.50 points .* limit 0.25"):
        fnmr_gate(sets, 0.0025)
    with pytest.raises(QuantizationRefused, match="cannot be measured"):
        fnmr_gate([_cmp("c", None, None)], 0.01)
