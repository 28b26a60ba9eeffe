"""The start policy: which liveness checks run, in what order, and what a refusal says.

The fusion rule (pinned by tests/models/test_liveness.py::test_fusion_rule_table):
1. no frames, or frames out of time order: refused;
2. passive (when required, or when the challenge runs on doubt): the window's score is the
   median of its sampled frames' live scores (the PAD model's probability, or the product of
   the classical cue factors); below the spoof band it is refused, between the spoof and live
   bands it is uncertain (the classical cues have no live band by default: at best uncertain);
3. temporal (when required): non-rigid motion or a blink across the window, else refused;
4. challenge: always when `active: always`; on doubt when `active: when_uncertain`; with
   `active: never` an uncertain passive score is refused; a passed challenge is still refused
   when the passive score over the frames that answered it falls below the spoof band;
5. otherwise live.
The checks run in this order and the first refusal decides. Any error inside a check refuses
the start (fail closed).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence

from models.engine import FaceEngine
from models.errors import ModelError
from models.liveness.active import ChallengeSession, State, plan_steps
from models.liveness.config import ActiveMode, LivenessPolicyConfig
from models.liveness.onnx_pad import carried_thresholds, load_pad
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
    """The pack's ONNX PAD model when it has one, else the classical cues.

    The PAD's bands: `liveness.passive.*_threshold` where set, else the pack's PAD
    calibration, else the PAD component's own (see `carried_thresholds`).
    """
    model = load_pad(engine.pack_dir, engine.manifest, threads=1)
    if model is not None:
        carried = carried_thresholds(
            engine.pack_dir, engine.manifest, model, config.passive.calibration
        )
        return ModelPad(model, config.passive, carried)
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
        bands = self.passive.thresholds
        live = "live never confirmed" if math.isinf(bands.live) else f"live >= {bands.live:g}"
        return (
            f"{'+'.join(parts)} ({self.passive.name}, {live}, spoof < {bands.spoof:g} from "
            f"{bands.source})"
        )

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
        bands = self.passive.thresholds
        if c.require_passive or c.active == ActiveMode.WHEN_UNCERTAIN:
            result = self.passive.score(frames)
            scores["passive"] = result.score
            scores.update({f"passive_{k}": v for k, v in result.details.items()})
            if c.require_passive and result.score < bands.spoof:
                return LivenessDecision.refused(
                    Cause.PASSIVE_SPOOF,
                    f"passive live score {result.score:.2f} < {bands.spoof} ({bands.source})",
                    scores,
                )
            uncertain = result.score < bands.live
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
                f"passive live score {scores['passive']:.2f} < {bands.live} "
                f"({bands.source}) and no challenge is configured",
                scores,
            )
        return LivenessDecision(Outcome.LIVE, None, None, "live", scores)

    def start_challenge(self, start: float, rng: random.Random | None = None) -> ChallengeSession:
        """A new challenge with randomized steps, timed from `start` (frame clock)."""
        steps = plan_steps(self.config.challenge, rng or random.SystemRandom())
        return ChallengeSession(self.config.challenge, steps, start)

    def finish_challenge(
        self,
        session: ChallengeSession,
        scores: dict[str, float] | None = None,
        answered: Sequence[LivenessFrame] = (),
    ) -> LivenessDecision:
        """The decision once the challenge has ended (a pending one counts as timed out).

        A passed challenge is live unless the passive score over the frames that answered it
        (`answered`, those with a face) falls below the spoof band: a replayed video can
        happen to blink and turn as asked, but it stays a screen while it does."""
        scores = dict(scores or {})
        scores["challenge_progress"] = session.progress
        if session.state == State.PASSED:
            if self.config.require_passive and answered:
                result = self.passive.score(answered)
                scores["passive_challenge"] = result.score
                bands = self.passive.thresholds
                if result.score < bands.spoof:
                    return LivenessDecision.refused(
                        Cause.PASSIVE_SPOOF,
                        f"passive live score {result.score:.2f} during the challenge < "
                        f"{bands.spoof} ({bands.source})",
                        scores,
                    )
            return LivenessDecision(Outcome.LIVE, None, None, session.detail, scores)
        if session.state == State.FAILED and session.cause is not None:
            return LivenessDecision.refused(session.cause, session.detail, scores)
        return LivenessDecision.refused(
            Cause.CHALLENGE_TIMEOUT, "challenge ended before it was completed", scores
        )
