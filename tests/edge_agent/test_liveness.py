"""Liveness at the cab gate with real ONNX sessions: a printed photo is refused, a live operator is not."""

from __future__ import annotations

import numpy as np
import pytest

from contract.codes import EventKind, GateState, LivenessCheck, ReasonCode
from edge_agent.cab.liveness import NoLiveness, SequenceLiveness
from edge_agent.cab.simclip import SimulatedOperator, live_clip
from edge_agent.cab.sources import ReplayFeed
from edge_agent.cab.types import Frame
from edge_agent.config import LivenessSection, parse_config
from models.liveness import ActiveMode, Step, observe
from models.liveness.synthetic import rigid_sequence
from tests.edge_agent.conftest import base_config, cab_frame
from tests.models.faces import astronaut

FPS = 15.0
SEQUENCE = {"policy": "sequence"}
WINDOW = {"window_s": 3.0}


@pytest.fixture(scope="module")
def astro_cab() -> np.ndarray:
    return cab_frame(astronaut())


@pytest.fixture(scope="module")
def live_frames(engine, astro_cab) -> list[np.ndarray]:
    faces = engine.detect(astro_cab)
    assert faces
    return live_clip(astro_cab, faces[0].detection.box, 30)


def _decision_event(parts):
    events = [parts.outbox.parse(p) for p in parts.outbox.due(100)]
    return [e for e in events if e.kind == EventKind.CAB_DECISION][-1]


def test_printed_photo_of_an_enrolled_operator_is_refused(make_gate, astro_cab) -> None:
    parts = make_gate(liveness=SEQUENCE, gate=WINDOW)
    photo = [image for image, _ in rigid_sequence(astro_cab, 30, fps=FPS, seed=1)]
    decision = parts.gate.request_start(ReplayFeed(photo, fps=FPS))
    assert decision.reason == ReasonCode.LIVENESS_FAILED, decision.detail
    assert decision.operator_id is None and decision.match is None  # never matched
    assert parts.interlock.read()["enable"] is False
    assert parts.gate.status.state == GateState.LOCKED
    event = _decision_event(parts)
    assert event.reason == ReasonCode.LIVENESS_FAILED
    assert event.payload.decision == "denied"
    assert "liveness rigid_face" in event.payload.detail or "passive_spoof" in event.payload.detail
    assert event.payload.liveness_score is not None
    assert event.evidence  # the attempt is kept for review


def test_live_operator_is_authorized(make_gate, engine, astro_cab) -> None:
    parts = make_gate(liveness=SEQUENCE, gate=WINDOW)
    liveness = parts.gate.verifier.liveness
    seen = observe(engine, astro_cab, 0.0)
    operator = SimulatedOperator(
        astro_cab, seen.face.detection.box, seen.dense.points, liveness.display, FPS
    )
    decision = parts.gate.request_start(operator)
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert parts.interlock.read()["enable"] is True
    event = _decision_event(parts)
    assert event.payload.match.operator_id == "op-astro"
    assert 0.0 <= event.payload.liveness_score <= 1.0
    # The window was long enough for the temporal check, not just frames_required.
    assert event.payload.frames_used >= LivenessSection().temporal.min_frames


def test_live_operator_follows_every_challenge_step(make_gate, engine, astro_cab) -> None:
    parts = make_gate(
        liveness={**SEQUENCE, "active": ActiveMode.ALWAYS.value, "challenge": {"steps": 3}},
        gate=WINDOW,
    )
    display = parts.gate.verifier.liveness.display
    seen = observe(engine, astro_cab, 0.0)
    operator = SimulatedOperator(astro_cab, seen.face.detection.box, seen.dense.points, display)
    decision = parts.gate.request_start(operator)
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert {p.step for p in display.shown} == {Step.BLINK, Step.TURN_LEFT, Step.TURN_RIGHT}
    # A start the challenge had to decide is one with a liveness doubt (no template from it).
    assert _decision_event(parts).payload.liveness_by == LivenessCheck.CHALLENGE


def test_window_too_short_for_the_temporal_check_is_refused(make_gate, live_frames) -> None:
    parts = make_gate(liveness=SEQUENCE, gate={"window_s": 0.5})
    decision = parts.gate.request_start(ReplayFeed(live_frames, fps=FPS))
    assert decision.reason == ReasonCode.LIVENESS_FAILED
    assert "too_few_frames" in decision.detail


def test_challenge_prompts_in_two_languages_and_a_refusal_names_the_cause(
    make_gate, astro_cab
) -> None:
    parts = make_gate(
        liveness={
            **SEQUENCE,
            "active": ActiveMode.ALWAYS.value,
            "challenge": {"steps": 1, "step_timeout_s": 1.0},
        },
        gate=WINDOW,
    )
    liveness = parts.gate.verifier.liveness
    assert isinstance(liveness, SequenceLiveness)
    faces = parts.gate.verifier.analyzer.engine.detect(astro_cab)
    moving = live_clip(astro_cab, faces[0].detection.box, 30)
    # The operator moves until a prompt appears, then stands still: the step times out
    # whichever step was drawn (switching on the prompt, not at a fixed frame, keeps this
    # independent of how many frames the liveness window happened to take).
    display = liveness.display

    class FreezesWhenAsked:
        def __init__(self) -> None:
            self.index = 0

        def next_frame(self, timeout_s: float) -> Frame:
            asked = display.current is not None
            image = astro_cab if asked else moving[self.index % len(moving)]
            frame = Frame(image, self.index / FPS, self.index)
            self.index += 1
            return frame

    decision = parts.gate.request_start(FreezesWhenAsked())
    shown = liveness.display.shown
    assert shown, "a challenge prompt was shown"
    assert shown[0].text["zh-CN"] and shown[0].text["en"]
    assert liveness.display.current is None  # cleared once the challenge ended
    assert decision.reason == ReasonCode.LIVENESS_FAILED
    assert "challenge" in decision.detail


def test_policy_none_is_explicit_and_logs_loudly(tmp_path, caplog) -> None:
    config = parse_config(base_config(tmp_path, "", liveness={"policy": "none"}))
    assert not config.liveness.active_checks
    assert not config.liveness.policy_config().enabled
    with caplog.at_level("WARNING"):
        NoLiveness()
    assert "NO presentation-attack detection" in caplog.text


def test_liveness_section_errors_name_the_field(tmp_path) -> None:
    from edge_agent.config import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(base_config(tmp_path, "", liveness={"passive": {"live_threshold": 2}}))
    assert "liveness.passive.live_threshold" in str(err.value)


def test_a_pack_without_pad_says_so_at_start_in_status_and_heartbeat(make_gate, caplog) -> None:
    import time

    from edge_agent.cab.agent import cab_heartbeat, passive_pad

    with caplog.at_level("WARNING"):
        parts = make_gate(liveness=SEQUENCE)
    assert isinstance(parts.gate.verifier.liveness, SequenceLiveness)
    assert "has no passive PAD model" in caplog.text and "challenge" in caplog.text
    assert passive_pad(parts.gate) is None
    beat = cab_heartbeat(parts.config, parts.gate, parts.outbox, time.monotonic())
    assert beat.passive_pad is None
    assert "passive_pad" in beat.model_dump(mode="json")


def test_an_imported_pad_is_named_where_the_agent_reports(tmp_path, default_pack, caplog) -> None:
    pytest.importorskip("torch")
    from models.engine import FaceEngine
    from tests.training.test_pad_import import _write_weights
    from training.pad_import import PAD_FILE, import_pad

    _write_weights(tmp_path / "weights")
    pack = import_pad(default_pack, tmp_path / "weights", tmp_path / "packs" / "with-pad")
    engine = FaceEngine(pack.pack_dir, threads=1)
    with caplog.at_level("WARNING"):
        liveness = SequenceLiveness(engine, LivenessSection.model_validate(SEQUENCE))
    assert liveness.passive_pad == PAD_FILE
    assert "no passive PAD model" not in caplog.text
