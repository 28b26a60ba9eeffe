"""Liveness: the start policy refuses printed photos and framed faces, passes real motion.

Generated sequences (a still photo moved rigidly, a face crop inside a bright rectangle,
FaceMesh points of a real photo turned in 3-D or with the lids closed) run everywhere; the
shared clips are used when present.
"""

from __future__ import annotations

import random
from math import inf
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from contract.codes import ReasonCode
from models.errors import ModelError
from models.liveness import (
    PROMPTS,
    ActiveConfig,
    ActiveMode,
    Cause,
    LivenessFrame,
    LivenessPolicy,
    LivenessPolicyConfig,
    Outcome,
    State,
    Step,
    TemporalConfig,
    cues,
    observe,
)
from models.liveness.active import ChallengeSession, plan_steps
from models.liveness.config import CueConfig, ParallaxConfig, PassiveConfig
from models.liveness.geometry import LEFT_EYE, RIGHT_EYE, eye_aspect_ratio, yaw_offset
from models.liveness.passive import ClassicalPad, EvenSample, PassiveResult, resolve_thresholds
from models.liveness.synthetic import framed_face, rigid_sequence
from models.liveness.temporal import check_temporal
from models.liveness.types import PassiveThresholds
from models.runtime.facemesh import DenseLandmarks
from tests.models import faces

FPS = 15.0


def observe_all(engine, frames: list[tuple[np.ndarray, float]]) -> list[LivenessFrame]:
    seen = [observe(engine, image, t) for image, t in frames]
    return [f for f in seen if f is not None]


@pytest.fixture(scope="module")
def astronaut_frame(engine) -> LivenessFrame:
    frame = observe(engine, faces.astronaut(), 0.0)
    assert frame is not None and frame.dense is not None
    return frame


# --- printed photo and screen attacks, generated -------------------------------------------


def test_printed_photo_moved_rigidly_is_refused_with_liveness_failed(engine) -> None:
    frames = observe_all(engine, rigid_sequence(faces.astronaut(), 20, fps=FPS, seed=1))
    assert len(frames) >= 18  # the photo is seen as a face in (almost) every frame
    decision = LivenessPolicy(LivenessPolicyConfig()).evaluate(frames)
    assert decision.outcome == Outcome.REFUSED
    assert decision.reason == ReasonCode.LIVENESS_FAILED
    assert decision.cause in (Cause.RIGID_FACE, Cause.PASSIVE_SPOOF)
    assert not decision.live


def test_photo_on_a_stand_is_rigid_for_the_temporal_check(engine) -> None:
    still = faces.cameraman()
    frames = observe_all(engine, [(still, i / FPS) for i in range(15)])
    result = check_temporal(frames, TemporalConfig())
    assert not result.passed and result.cause == Cause.RIGID_FACE
    assert result.scores["max_planar_residual"] < TemporalConfig().nonrigid_residual
    decision = LivenessPolicy(LivenessPolicyConfig(require_passive=False)).evaluate(frames)
    assert decision.reason == ReasonCode.LIVENESS_FAILED and decision.cause == Cause.RIGID_FACE


def test_tilting_a_printed_photo_is_not_a_blink(engine) -> None:
    frames = observe_all(engine, rigid_sequence(faces.astronaut(), 20, fps=FPS, seed=3, tilt=0.12))
    raw = [eye_aspect_ratio(f.dense.points) for f in frames if f.dense is not None]
    result = check_temporal(frames, TemporalConfig())
    assert result.scores["blink"] == 0.0
    assert not result.passed
    assert min(raw) < max(raw)  # the tilt does change the raw eye shape in the image


def test_face_inside_a_bright_rectangle_shows_a_border(engine) -> None:
    crop = faces.astronaut()[30:250, 130:330]
    screen = framed_face(crop)
    frame = observe(engine, screen, 0.0)
    assert frame is not None
    sides = cues.border_sides(screen, frame.face.detection.box, CueConfig())
    assert cues.border_score(sides) == 1.0
    evidence = ClassicalPad(PassiveConfig()).frame_evidence(frame)
    assert evidence["border"] == 1.0


def test_framed_face_moved_rigidly_is_refused(engine) -> None:
    screen = framed_face(faces.astronaut()[30:250, 130:330])
    frames = observe_all(engine, rigid_sequence(screen, 20, fps=FPS, seed=2))
    decision = LivenessPolicy(LivenessPolicyConfig()).evaluate(frames)
    assert decision.reason == ReasonCode.LIVENESS_FAILED
    assert decision.scores["passive_border_evidence"] > 0.5


def test_hand_held_photo_carries_its_background_with_the_face(engine) -> None:
    # The whole sheet shifts: the ring around the face moves as far as the face does.
    image = faces.astronaut()
    shifted = np.asarray(
        cv2.warpAffine(
            image,
            np.float32([[1, 0, 30], [0, 1, 10]]),
            image.shape[1::-1],
            borderMode=cv2.BORDER_REPLICATE,
        )
    )
    a, b = observe(engine, image, 0.0), observe(engine, shifted, 0.1)
    assert a is not None and b is not None
    ratio = cues.parallax_comotion(
        image, shifted, a.face.detection.box, b.face.detection.box, ParallaxConfig()
    )
    assert ratio is not None and ratio > ParallaxConfig().comove_ratio
    # A face pasted over a still background: the ring does not move.
    background = image.copy()
    moved = background.copy()
    x0, y0, x1, y1 = (int(v) for v in a.face.detection.box)
    moved[y0 + 10 : y1 + 10, x0 + 30 : x1 + 30] = image[y0:y1, x0:x1]
    c = observe(engine, moved, 0.1)
    assert c is not None
    still_ratio = cues.parallax_comotion(
        background, moved, a.face.detection.box, c.face.detection.box, ParallaxConfig()
    )
    assert still_ratio is not None and still_ratio < ParallaxConfig().comove_ratio


# --- temporal and active checks on real FaceMesh geometry, moved in 3-D ----------------------


def turned(points: np.ndarray, degrees: float) -> np.ndarray:
    """FaceMesh points of the same face turned about the vertical axis (real 3-D motion)."""
    centre = points.mean(axis=0)
    p = points.astype(np.float64) - centre
    a = np.radians(degrees)
    x = p[:, 0] * np.cos(a) + p[:, 2] * np.sin(a)
    z = -p[:, 0] * np.sin(a) + p[:, 2] * np.cos(a)
    return np.stack([x, p[:, 1], z], axis=1).astype(np.float32) + centre.astype(np.float32)


def eyes_closed(points: np.ndarray) -> np.ndarray:
    """The same points with both upper and lower lids moved onto the eye's axis."""
    out = points.copy()
    for eye in (RIGHT_EYE, LEFT_EYE):
        axis_y = (points[eye[0], 1] + points[eye[3], 1]) / 2
        for i in (eye[1], eye[2], eye[4], eye[5]):
            out[i, 1] = axis_y + 0.15 * (points[i, 1] - axis_y)
    return out


def with_points(base: LivenessFrame, points: np.ndarray, t: float) -> LivenessFrame:
    return LivenessFrame(base.image, base.face, t, DenseLandmarks(points, 1.0))


def left_degrees(points: np.ndarray) -> float:
    """The rotation sign that moves the nose to image right (operator's left, unmirrored)."""
    return 12.0 if yaw_offset(turned(points, 12.0)) > yaw_offset(points) else -12.0


def test_head_turning_in_3d_passes_the_temporal_check(astronaut_frame) -> None:
    pts = astronaut_frame.dense.points
    sign = np.sign(left_degrees(pts))
    frames = [with_points(astronaut_frame, turned(pts, sign * 1.2 * i), i / FPS) for i in range(15)]
    result = check_temporal(frames, TemporalConfig())
    assert result.passed, result.detail
    assert result.scores["nonrigid_fraction"] >= TemporalConfig().min_nonrigid_fraction


def test_a_blink_passes_the_temporal_check(astronaut_frame) -> None:
    pts = astronaut_frame.dense.points
    frames = [
        with_points(astronaut_frame, eyes_closed(pts) if i in (6, 7) else pts, i / FPS)
        for i in range(15)
    ]
    result = check_temporal(frames, TemporalConfig())
    assert result.passed and result.scores["blink"] == 1.0


def test_too_few_frames_and_missing_landmarks_are_refused(astronaut_frame) -> None:
    policy = LivenessPolicy(LivenessPolicyConfig(require_passive=False))
    short = [with_points(astronaut_frame, astronaut_frame.dense.points, i / FPS) for i in range(3)]
    assert policy.evaluate(short).cause == Cause.TOO_FEW_FRAMES
    bare = [LivenessFrame(astronaut_frame.image, astronaut_frame.face, i / FPS) for i in range(15)]
    assert policy.evaluate(bare).cause == Cause.NO_LANDMARKS
    empty = policy.evaluate([])
    assert empty.cause == Cause.NO_FRAMES and empty.reason == ReasonCode.LIVENESS_FAILED
    shuffled = policy.evaluate([short[1], short[0], short[2]])
    assert shuffled.cause == Cause.BAD_INPUT and "frame 1 is older than frame 0" in shuffled.detail


def run_challenge(session: ChallengeSession, base: LivenessFrame, start: float) -> State:
    """Act out each prompted step with real FaceMesh geometry, then return to neutral."""
    pts = base.dense.points
    left = left_degrees(pts)
    t = start
    while (prompt := session.prompt()) is not None:
        if prompt.step == Step.BLINK:
            poses = [pts, pts, eyes_closed(pts), pts]
        else:
            angle = left if prompt.step == Step.TURN_LEFT else -left
            poses = [pts, turned(pts, angle / 2), turned(pts, angle * 1.5), pts]
        for pose in poses:
            t += 1 / FPS
            session.feed(with_points(base, pose, t))
    return session.state


def test_challenge_steps_are_random_distinct_and_all_prompted_in_two_languages() -> None:
    config = ActiveConfig(steps=3)
    orders = {tuple(plan_steps(config, random.Random(seed))) for seed in range(40)}
    assert len(orders) > 1
    assert all(len(set(order)) == 3 for order in orders)
    for step in Step:
        assert PROMPTS[step]["zh-CN"] and PROMPTS[step]["en"]


def test_following_the_challenge_passes_it(astronaut_frame) -> None:
    policy = LivenessPolicy(LivenessPolicyConfig(challenge=ActiveConfig(steps=3)))
    session = policy.start_challenge(0.0, random.Random(7))
    prompt = session.prompt()
    assert prompt is not None and prompt.index == 1 and prompt.total == 3
    assert prompt.text["zh-CN"] == PROMPTS[prompt.step]["zh-CN"]
    assert run_challenge(session, astronaut_frame, 0.0) == State.PASSED
    assert policy.finish_challenge(session).live


@pytest.mark.parametrize(
    ("passive", "answered", "live"),
    [(0.1, True, False), (0.45, True, True), (0.1, False, True)],
)
def test_a_passed_challenge_is_refused_when_its_answer_scores_as_a_spoof(
    astronaut_frame, passive: float, answered: bool, live: bool
) -> None:
    # A replayed clip can happen to blink and turn as prompted; the PAD keeps watching.
    policy = LivenessPolicy(LivenessPolicyConfig(), Fixed(passive))
    session = policy.start_challenge(0.0, random.Random(3))
    assert run_challenge(session, astronaut_frame, 0.0) == State.PASSED
    frames = [with_points(astronaut_frame, astronaut_frame.dense.points, i / FPS) for i in range(5)]
    decision = policy.finish_challenge(session, {"passive": 0.45}, frames if answered else [])
    assert decision.live is live
    if not live:
        assert decision.cause == Cause.PASSIVE_SPOOF and "during the challenge" in decision.detail
    if answered:
        assert decision.scores["passive_challenge"] == passive


def test_the_challenge_answer_is_kept_bounded_and_evenly_spaced() -> None:
    keeper = EvenSample(4)
    for i in range(1000):
        keeper.add(i)  # type: ignore[arg-type] - any item; frames in the agent
    kept = keeper.kept
    assert 4 <= len(kept) <= 8 and kept[0] == 0
    gaps = {b - a for a, b in zip(kept, kept[1:], strict=False)}
    assert len(gaps) == 1 and kept[-1] + gaps.pop() > 1000 - 1 - keeper.stride


def test_a_still_face_times_out_and_a_wrong_turn_fails(astronaut_frame) -> None:
    config = ActiveConfig(steps=1, step_timeout_s=2.0)
    pts = astronaut_frame.dense.points
    session = ChallengeSession(config, [Step.BLINK], start=0.0)
    for i in range(40):
        session.feed(with_points(astronaut_frame, pts, i / FPS))
    assert session.state == State.FAILED and session.cause == Cause.CHALLENGE_TIMEOUT
    decision = LivenessPolicy(LivenessPolicyConfig()).finish_challenge(session)
    assert decision.reason == ReasonCode.LIVENESS_FAILED

    wrong = ChallengeSession(config, [Step.TURN_RIGHT], start=0.0)
    left = left_degrees(pts)
    for i, pose in enumerate([pts, turned(pts, left * 1.5)]):
        wrong.feed(with_points(astronaut_frame, pose, i / FPS))
    assert wrong.state == State.FAILED and wrong.cause == Cause.CHALLENGE_WRONG


def test_mirrored_camera_swaps_left_and_right(astronaut_frame) -> None:
    pts = astronaut_frame.dense.points
    session = ChallengeSession(ActiveConfig(steps=1, mirror=True), [Step.TURN_RIGHT], start=0.0)
    for i, pose in enumerate([pts, turned(pts, left_degrees(pts) * 1.5)]):
        session.feed(with_points(astronaut_frame, pose, i / FPS))
    assert session.state == State.PASSED


class Fixed:
    """A passive scorer that gives every window the same score, with bands 0.3 / 0.6."""

    name = "fixed"
    thresholds = PassiveThresholds(0.6, 0.3, "test")

    def __init__(self, score: float) -> None:
        self.value = score

    def score(self, frames):  # noqa: ANN001, ANN202 - PassiveScorer protocol
        return PassiveResult((self.value,), self.value)


LIVE, CHALLENGE = Outcome.LIVE, Outcome.CHALLENGE
SPOOF, UNSURE, RIGID = Cause.PASSIVE_SPOOF, Cause.PASSIVE_UNCERTAIN, Cause.RIGID_FACE


@pytest.mark.parametrize(
    ("passive", "moving", "active", "expected"),
    [
        # confident passive: the temporal check decides, the challenge only when always
        (0.9, True, "when_uncertain", LIVE),
        (0.9, False, "when_uncertain", RIGID),
        (0.9, True, "always", CHALLENGE),
        (0.9, True, "never", LIVE),
        # exactly on the live band counts as live, exactly on the spoof band as doubt
        (0.6, True, "when_uncertain", LIVE),
        (0.3, True, "when_uncertain", CHALLENGE),
        # doubt: the challenge when configured, else a refusal; temporal still comes first
        (0.45, True, "when_uncertain", CHALLENGE),
        (0.45, False, "when_uncertain", RIGID),
        (0.45, True, "never", UNSURE),
        # below the spoof band: refused before anything else, whatever the motion
        (0.1, True, "when_uncertain", SPOOF),
        (0.1, True, "always", SPOOF),
        (0.29, False, "when_uncertain", SPOOF),
    ],
)
def test_fusion_rule_table(astronaut_frame, passive, moving, active, expected) -> None:
    pts = astronaut_frame.dense.points
    frames = [
        with_points(astronaut_frame, eyes_closed(pts) if moving and i == 5 else pts, i / FPS)
        for i in range(15)
    ]
    config = LivenessPolicyConfig(active=ActiveMode(active))
    decision = LivenessPolicy(config, Fixed(passive)).evaluate(frames)
    if isinstance(expected, Outcome):
        assert decision.outcome == expected, decision.detail
    else:
        assert decision.outcome == Outcome.REFUSED and decision.cause == expected, decision.detail


def test_config_thresholds_override_the_carried_ones() -> None:
    carried = PassiveThresholds(0.5, 0.2, "pack")
    assert resolve_thresholds(PassiveConfig(), carried) is carried
    both = resolve_thresholds(PassiveConfig(live_threshold=0.7, spoof_threshold=0.1), carried)
    assert (both.live, both.spoof, both.source) == (0.7, 0.1, "config")
    one = resolve_thresholds(PassiveConfig(live_threshold=0.8), carried)
    assert (one.live, one.spoof, one.source) == (0.8, 0.2, "config + pack")
    with pytest.raises(ValueError, match="spoof"):
        resolve_thresholds(PassiveConfig(spoof_threshold=0.9), carried)
    classical = ClassicalPad(PassiveConfig()).thresholds  # no live band: the challenge decides
    assert (classical.live, classical.spoof, classical.source) == (inf, 0.3, "classical default")


def test_the_classical_cues_never_confirm_a_window_on_their_own(astronaut_frame) -> None:
    # A perfect classical score is still doubt: without a PAD model the challenge decides,
    # and with `active: never` the start is refused rather than passed on the cues alone.
    class Perfect(Fixed):
        thresholds = ClassicalPad(PassiveConfig()).thresholds

    pts = astronaut_frame.dense.points
    frames = [
        with_points(astronaut_frame, eyes_closed(pts) if i == 5 else pts, i / FPS)
        for i in range(15)
    ]
    asked = LivenessPolicy(LivenessPolicyConfig(), Perfect(1.0)).evaluate(frames)
    assert asked.outcome == Outcome.CHALLENGE
    never = LivenessPolicy(LivenessPolicyConfig(active="never"), Perfect(1.0)).evaluate(frames)
    assert never.cause == Cause.PASSIVE_UNCERTAIN
    assert (
        "live never confirmed" in LivenessPolicy(LivenessPolicyConfig(), Perfect(1.0)).description
    )
    site = ClassicalPad(PassiveConfig(live_threshold=0.6)).thresholds
    assert (site.live, site.source) == (0.6, "classical default + config")


def test_a_failing_check_refuses_the_start(astronaut_frame) -> None:
    class Broken:
        name = "broken"
        thresholds = PassiveThresholds(0.6, 0.3, "test")

        def score(self, frames):  # noqa: ANN001, ANN202 - PassiveScorer protocol
            raise ModelError("PAD model failed: boom")

    decision = LivenessPolicy(LivenessPolicyConfig(), Broken()).evaluate([astronaut_frame])
    assert decision.reason == ReasonCode.LIVENESS_FAILED and decision.cause == Cause.MODEL_ERROR
    assert "boom" in decision.detail


# --- config -------------------------------------------------------------------------------


def test_config_rejects_bad_values_by_field() -> None:
    with pytest.raises(ValidationError, match="temporal.min_frames"):
        LivenessPolicyConfig.model_validate({"temporal": {"min_frames": 1}})
    with pytest.raises(ValidationError, match="spoof_threshold must not exceed"):
        LivenessPolicyConfig.model_validate(
            {"passive": {"spoof_threshold": 0.8, "live_threshold": 0.5}}
        )
    with pytest.raises(ValidationError, match="no check is required"):
        LivenessPolicyConfig(require_passive=False, require_temporal=False, active="never")
    with pytest.raises(ValidationError, match="extra"):
        LivenessPolicyConfig.model_validate({"passive": {"treshold": 0.5}})
    with pytest.raises(ValidationError, match="ring_outer"):
        ParallaxConfig(ring_inner=2.0, ring_outer=1.5)


# --- the shared clips, when present ----------------------------------------------------------


def clip(path: Path, seconds: float) -> list[tuple[np.ndarray, float]]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames: list[tuple[np.ndarray, float]] = []
    while len(frames) < seconds * fps:
        ok, image = capture.read()
        if not ok:
            break
        frames.append((image, len(frames) / fps))
    capture.release()
    return frames


def test_real_live_clip_is_not_refused_and_its_replay_is(engine, shared_dir: Path) -> None:
    root = shared_dir / "data" / "liveness" / "liveness_replay_frames"
    if not root.is_dir():
        pytest.skip("liveness_replay_frames not present")
    policy = LivenessPolicy(LivenessPolicyConfig())
    live = policy.evaluate(observe_all(engine, clip(root / "live" / "real2.webm", 1.5)))
    assert live.outcome != Outcome.REFUSED, live.detail
    replay = policy.evaluate(observe_all(engine, clip(root / "spoof_replay" / "fake2.webm", 1.5)))
    assert replay.reason == ReasonCode.LIVENESS_FAILED


def test_real_printed_photo_moved_rigidly_is_refused(engine, shared_dir: Path) -> None:
    folder = shared_dir / "data" / "liveness" / "antispoof_samples" / "spoof_print"
    photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not photos:
        pytest.skip("antispoof_samples/spoof_print not present")
    image = cv2.imread(str(photos[0]))
    frames = observe_all(engine, rigid_sequence(image, 20, fps=FPS, seed=5))
    decision = LivenessPolicy(LivenessPolicyConfig()).evaluate(frames)
    assert decision.reason == ReasonCode.LIVENESS_FAILED
