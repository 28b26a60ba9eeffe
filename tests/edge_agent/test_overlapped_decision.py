"""The overlapped start decision with a passive PAD model (real ONNX sessions).

Matching and the certificate check run on the frames as they arrive while liveness observes;
a confidently live window is authorized without a challenge, and the decision still refuses
an expired certificate and a replayed clip.

The PAD here is a graph built by the test whose live score is the face crop's brightness, with
bands the pack carries: the operator's own frames score live, the replayed clip (the same
operator's frames, dimmed as a phone screen re-filmed indoors is) scores as an attack. With
../shared present, the real MiniFASNet pair and the real replay clip are checked as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.codes import ReasonCode
from edge_agent.cab.simclip import SimulatedOperator
from edge_agent.cab.sources import ReplayFeed
from edge_agent.cab.types import Frame
from models.engine import FaceEngine
from models.liveness import observe
from tests.edge_agent.conftest import (
    TODAY,
    Signer,
    astro_operator,
    base_config,
    cab_frame,
    cert,
)
from tests.models.faces import astronaut
from tests.models.test_liveness_onnx import entry, mean_model

FPS = 15.0
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


class Counting:
    """Counts the frames a feed hands out (how long the decision looked)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.taken = 0

    def next_frame(self, timeout_s: float) -> Frame | None:
        self.taken += 1
        frame: Frame | None = self.inner.next_frame(timeout_s)
        return frame


def _pad_pack(tmp_path: Path, default_pack: Path, live: float, spoof: float) -> Path:
    from models.manifest import load_manifest, write_manifest

    pack = tmp_path / "pad-pack"
    pack.mkdir()
    for item in default_pack.iterdir():
        if item.name != "manifest.yaml":
            (pack / item.name).symlink_to(item)
    pad = mean_model(pack / "pad.onnx")
    manifest = load_manifest(default_pack)
    params = {"live_threshold": live, "spoof_threshold": spoof}
    write_manifest(
        pack, manifest.model_copy(update={"files": (*manifest.files, entry(pad, params))})
    )
    return pack


@pytest.fixture
def pad_gate(tmp_path: Path, default_pack: Path, signer: Signer) -> Iterator[Callable[..., Any]]:
    from edge_agent.cab.agent import build_gate
    from edge_agent.config import parse_config
    from models.manifest import CalibrationBlock
    from models.placeholder import placeholder_calibration

    built: list[Any] = []

    def make(pack: Path, snapshot: Any = None, **sections: dict[str, Any]) -> Any:
        engine = FaceEngine(pack, threads=1)
        sections = {"liveness": {"policy": "sequence"}, "gate": {"window_s": 3.0}, **sections}
        config = parse_config(base_config(tmp_path, signer.public_b64, **sections))
        block = CalibrationBlock(calibrations={"test": placeholder_calibration(engine.contract_id)})
        parts = build_gate(config, engine=engine, calibrations=block)
        parts.gate.cache.install_snapshot(snapshot or signer.snapshot())
        parts.gate.cache.install_config(signer.config())
        built.append(parts)
        return parts

    yield make
    for parts in built:
        parts.close()


@pytest.fixture(scope="module")
def astro_cab() -> np.ndarray:
    return cab_frame(astronaut())


def _operator(parts: Any, engine_image: np.ndarray) -> SimulatedOperator:
    engine = parts.gate.verifier.analyzer.engine
    seen = observe(engine, engine_image, 0.0)
    assert seen is not None and seen.dense is not None
    display = parts.gate.verifier.liveness.display
    return SimulatedOperator(engine_image, seen.face.detection.box, seen.dense.points, display, FPS)


def _crop_score(parts: Any, image: np.ndarray) -> float:
    verifier = parts.gate.verifier
    face = verifier.analyzer.largest_face(image)
    pad = verifier.liveness.policy.passive.model
    return float(pad.score(image, [face.detection.box])[0])


def test_a_confident_live_window_is_authorized_early_without_a_challenge(
    pad_gate, tmp_path: Path, default_pack: Path, astro_cab: np.ndarray
) -> None:
    parts = pad_gate(_pad_pack(tmp_path, default_pack, live=0.4, spoof=0.3))
    liveness = parts.gate.verifier.liveness
    assert liveness.passive_pad == "pad.onnx" and liveness.thresholds.source == "pack"
    assert _crop_score(parts, astro_cab) > 0.4
    feed = Counting(_operator(parts, astro_cab))
    decision = parts.gate.request_start(feed)
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert not liveness.display.shown  # no challenge
    temporal = parts.config.liveness.temporal
    # Decided once the temporal minimum was reached, well before the 3 s window.
    assert temporal.min_frames <= decision.frames_used < 3.0 * FPS / 2
    assert decision.liveness_score is not None and decision.liveness_score > 0.4


def test_an_expired_certificate_is_refused_on_the_first_frames(
    pad_gate, tmp_path: Path, default_pack: Path, astro_cab: np.ndarray, signer: Signer
) -> None:
    from datetime import timedelta

    expired = cert("TS-ASTRO-1", expires=TODAY - timedelta(days=1))
    parts = pad_gate(
        _pad_pack(tmp_path, default_pack, live=0.4, spoof=0.3),
        snapshot=signer.snapshot([astro_operator(expired)]),
    )
    feed = Counting(_operator(parts, astro_cab))
    decision = parts.gate.request_start(feed)
    assert decision.reason == ReasonCode.CERT_EXPIRED, decision.detail
    assert decision.frames_used == parts.config.gate.frames_required
    assert parts.interlock.read()["enable"] is False
    assert not parts.gate.verifier.liveness.display.shown


def test_a_replayed_clip_is_refused_although_the_face_matches(
    pad_gate, tmp_path: Path, default_pack: Path, astro_cab: np.ndarray
) -> None:
    parts = pad_gate(_pad_pack(tmp_path, default_pack, live=0.4, spoof=0.3))
    live = _operator(parts, astro_cab).moving
    screen = [np.clip(f.astype(np.float32) * 0.35, 0, 255).astype(np.uint8) for f in live]
    assert _crop_score(parts, screen[0]) < 0.3 < 0.4 < _crop_score(parts, live[0])
    decision = parts.gate.request_start(ReplayFeed(screen, fps=FPS))
    assert decision.reason == ReasonCode.LIVENESS_FAILED, decision.detail
    assert "passive_spoof" in decision.detail
    assert parts.interlock.read()["enable"] is False


def test_a_doubtful_window_asks_for_the_challenge(
    pad_gate, tmp_path: Path, default_pack: Path, astro_cab: np.ndarray
) -> None:
    # Bands around the operator's own score: the window is in doubt, the challenge decides.
    parts = pad_gate(_pad_pack(tmp_path, default_pack, live=0.99, spoof=0.01))
    decision = parts.gate.request_start(_operator(parts, astro_cab))
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert parts.gate.verifier.liveness.display.shown  # the simulated operator answered


def test_without_a_pad_model_the_window_is_judged_once_and_the_challenge_decides(
    pad_gate, default_pack: Path, astro_cab: np.ndarray
) -> None:
    # The classical cues are no confident live score: the window is judged once, at its
    # minimum, and the challenge (answered by the simulated operator) decides.
    parts = pad_gate(default_pack)
    liveness = parts.gate.verifier.liveness
    assert liveness.passive_pad is None
    settled, verdict = liveness.settle([])
    assert settled and verdict is None
    decision = parts.gate.request_start(_operator(parts, astro_cab))
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert liveness.display.shown
