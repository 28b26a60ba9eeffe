"""Liveness domain types: the frames a check consumes and the decision it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from contract.codes import ReasonCode
from models.runtime.facemesh import DenseLandmarks
from models.types import Face, Image


@dataclass(frozen=True)
class LivenessFrame:
    """One camera frame with the face the engine found in it."""

    image: Image = field(repr=False)
    face: Face
    t: float
    """Capture time, seconds (any monotonic origin)."""
    dense: DenseLandmarks | None = field(default=None, repr=False)
    """FaceMesh points; temporal and active checks need them."""


@dataclass(frozen=True)
class PassiveThresholds:
    """The two bands of the window's passive live score, and where they came from."""

    live: float
    """At or above: passive passes. Infinite: never (the cues refuse but do not confirm)."""
    spoof: float
    """Below: passive refuses outright; between the two the result is uncertain."""
    source: str
    """"config", "calibration NAME" (the pack's calibration block), "pack" (the PAD
    component's own params) or "classical default"."""

    def __post_init__(self) -> None:
        if not (0.0 <= self.spoof <= self.live and (self.live <= 1.0 or math.isinf(self.live))):
            raise ValueError(
                f"passive thresholds from {self.source}: need 0 <= spoof ({self.spoof}) <= "
                f"live ({self.live}) <= 1 (or no live band)"
            )


class Outcome(StrEnum):
    """What the policy concluded."""

    LIVE = "live"
    REFUSED = "refused"
    CHALLENGE = "challenge"
    """The passive result is uncertain: run the challenge-response, then decide."""


class Cause(StrEnum):
    """Why liveness refused a start (the finer grain under LIVENESS_FAILED)."""

    PASSIVE_SPOOF = "passive_spoof"
    PASSIVE_UNCERTAIN = "passive_uncertain"
    NO_FRAMES = "no_frames"
    BAD_INPUT = "bad_input"
    NO_LANDMARKS = "no_landmarks"
    TOO_FEW_FRAMES = "too_few_frames"
    RIGID_FACE = "rigid_face"
    CHALLENGE_TIMEOUT = "challenge_timeout"
    CHALLENGE_WRONG = "challenge_wrong"
    MODEL_ERROR = "model_error"


@dataclass(frozen=True)
class LivenessDecision:
    """The verdict on a sequence: outcome, reason code, finer cause and the scores behind it."""

    outcome: Outcome
    reason: ReasonCode | None
    """LIVENESS_FAILED when refused, None otherwise."""
    cause: Cause | None
    detail: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """True only when the start may proceed."""
        return self.outcome == Outcome.LIVE

    @classmethod
    def refused(cls, cause: Cause, detail: str, scores: dict[str, float]) -> LivenessDecision:
        """A refusal with LIVENESS_FAILED."""
        return cls(Outcome.REFUSED, ReasonCode.LIVENESS_FAILED, cause, detail, scores)
