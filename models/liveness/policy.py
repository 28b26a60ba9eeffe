"""The start policy: which liveness checks run, in what order, and what a refusal says.

Steps: passive PAD score -> temporal (blink or non-rigid motion) -> challenge-response when
configured. Any error inside a check refuses the start (fail closed).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from models.engine import FaceEngine
from models.errors import ModelError
from models.liveness.active import ChallengeSession, State, plan_steps
from models.liveness.config import ActiveMode, LivenessPolicyConfig
from models.liveness.onnx_pad import load_pad
from models.liveness.passive import ClassicalPad, ModelPad, PassiveScorer
from models.liveness.temporal import check_temporal
from models.liveness.types import Cause, LivenessDecision, LivenessFrame, Outcome
from models.types import Image

logger = logging.getLogger(__name__)


def observe(engine: FaceEngine, image: Image, t: float) -> LivenessFrame | None:
    """The largest face of a frame with its dense landmarks (when the pack has FaceMesh)."""
    faces = engine.detect(image)
    if not faces:
        return None

    def area(face_box: tuple[float, float, float, float]) -> float:
        return (face_box[2] - face_box[0]) * (face_box[3] - face_box[1])

    face = max(faces, key=lambda f: area(f.detection.box))
    dense = engine.dense_landmarks(image, face) if engine.dense is not None else None
    return LivenessFrame(image, face, t, dense)


def passive_scorer_for(engine: FaceEngine, config: LivenessPolicyConfig) -> PassiveScorer:
    """The pack's ONNX PAD model when it has one, else the classical cues."""
    model = load_pad(engine.pack_dir, engine.manifest, threads=1)
    if model is not None:
        return ModelPad(model, config.passive)
    return ClassicalPad(config.passive)


class LivenessPolicy:
    """Decides whether a sequence of frames shows a live operator."""

    def __init__(self, config: LivenessPolicyConfig, passive: PassiveScorer | None = None) -> None:
        self.config = config
        self.passive: PassiveScorer = passive or ClassicalPad(config.passive)

    @property
    def description(self) -> str:
        """One line naming the required checks (for logs and bench results)."""
        c = self.config
        if not c.enabled:
            return "disabled"
        parts = [
            name
            for name, on in (("passive", c.require_passive), ("temporal", c.require_temporal))
            if on
        ]
        parts.append(f"active={c.active.value}")
        return f"{'+'.join(parts)} ({self.passive.name})"

    def evaluate(self, frames: Sequence[LivenessFrame]) -> LivenessDecision:
        """LIVE, REFUSED (LIVENESS_FAILED and a cause) or CHALLENGE (run `start_challenge`)."""
        try:
            return self._evaluate(frames)
        except (ModelError, ValueError) as err:
            logger.exception("liveness check failed; refusing")
            return LivenessDecision.refused(Cause.MODEL_ERROR, str(err), {})

    def _evaluate(self, frames: Sequence[LivenessFrame]) -> LivenessDecision:
        c = self.config
        if not c.enabled:
            return LivenessDecision(Outcome.LIVE, None, None, "liveness disabled", {})
        if not frames:
            return LivenessDecision.refused(Cause.NO_FRAMES, "no frames with a face", {})
        times = [f.t for f in frames]
        if any(b < a for a, b in zip(times, times[1:], strict=False)):
            first = next(i for i in range(1, len(times)) if times[i] < times[i - 1])
            return LivenessDecision.refused(
                Cause.BAD_INPUT, f"frame {first} is older than frame {first - 1}", {}
            )
        scores: dict[str, float] = {}
        uncertain = False
        if c.require_passive or c.active == ActiveMode.WHEN_UNCERTAIN:
            result = self.passive.score(frames)
            scores["passive"] = result.score
            scores.update({f"passive_{k}": v for k, v in result.details.items()})
            if c.require_passive and result.score < c.passive.spoof_threshold:
                return LivenessDecision.refused(
                    Cause.PASSIVE_SPOOF,
                    f"passive live score {result.score:.2f} < {c.passive.spoof_threshold}",
                    scores,
                )
            uncertain = result.score < c.passive.live_threshold
        if c.require_temporal:
            temporal = check_temporal(frames, c.temporal)
            scores.update({f"temporal_{k}": v for k, v in temporal.scores.items()})
            if not temporal.passed:
                assert temporal.cause is not None  # set whenever the check fails
                return LivenessDecision.refused(temporal.cause, temporal.detail, scores)
        if c.active == ActiveMode.ALWAYS or (c.active == ActiveMode.WHEN_UNCERTAIN and uncertain):
            return LivenessDecision(
                Outcome.CHALLENGE, None, None, "challenge-response required", scores
            )
        if uncertain and c.require_passive:
            return LivenessDecision.refused(
                Cause.PASSIVE_UNCERTAIN,
                f"passive live score {scores['passive']:.2f} < {c.passive.live_threshold} "
                "and no challenge is configured",
                scores,
            )
        return LivenessDecision(Outcome.LIVE, None, None, "live", scores)

    def start_challenge(self, start: float, rng: random.Random | None = None) -> ChallengeSession:
        """A new challenge with randomized steps, timed from `start` (frame clock)."""
        steps = plan_steps(self.config.challenge, rng or random.SystemRandom())
        return ChallengeSession(self.config.challenge, steps, start)

    @staticmethod
    def finish_challenge(
        session: ChallengeSession, scores: dict[str, float] | None = None
    ) -> LivenessDecision:
        """The decision once the challenge has ended (a pending one counts as timed out)."""
        scores = dict(scores or {})
        scores["challenge_progress"] = session.progress
        if session.state == State.PASSED:
            return LivenessDecision(Outcome.LIVE, None, None, session.detail, scores)
        if session.state == State.FAILED and session.cause is not None:
            return LivenessDecision.refused(session.cause, session.detail, scores)
        return LivenessDecision.refused(
            Cause.CHALLENGE_TIMEOUT, "challenge ended before it was completed", scores
        )
