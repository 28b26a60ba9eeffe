"""Active liveness: a randomized challenge (blink, turn left, turn right) checked from landmarks.

The agent shows and speaks `ChallengeSession.prompt()` (zh-CN and English), feeds every frame
to `ChallengeSession.feed()`, and stops when the state is no longer pending.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from models.liveness.config import ActiveConfig
from models.liveness.geometry import yaw_offset
from models.liveness.temporal import rectified_ear
from models.liveness.types import Cause, LivenessFrame
from models.types import FloatArray

logger = logging.getLogger(__name__)


class Step(StrEnum):
    """One thing the operator is asked to do."""

    BLINK = "blink"
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"


PROMPTS: dict[Step, dict[str, str]] = {
    Step.BLINK: {"zh-CN": "请眨眼", "en": "Please blink"},
    Step.TURN_LEFT: {"zh-CN": "请向左转头", "en": "Please turn your head to the left"},
    Step.TURN_RIGHT: {"zh-CN": "请向右转头", "en": "Please turn your head to the right"},
}
LANGUAGES = ("zh-CN", "en")


@dataclass(frozen=True)
class Prompt:
    """What the cab screen shows and the speaker says for the current step."""

    step: Step
    index: int
    total: int
    deadline: float
    """Frame time by which the step must be done."""
    text: dict[str, str]
    """Language tag -> text."""


class State(StrEnum):
    """Where a challenge stands."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


def plan_steps(config: ActiveConfig, rng: random.Random) -> list[Step]:
    """`config.steps` distinct steps in random order (never the same sequence by design)."""
    return rng.sample(list(Step), config.steps)


class ChallengeSession:
    """One challenge-response run, fed frame by frame."""

    def __init__(self, config: ActiveConfig, steps: list[Step], start: float) -> None:
        if not steps:
            raise ValueError("a challenge needs at least one step")
        self.config = config
        self.steps = steps
        self.state = State.PENDING
        self.cause: Cause | None = None
        self.detail = ""
        self._index = 0
        self._step_start = start
        self._reference: FloatArray | None = None
        self._yaw0: float | None = None
        self._open_ear = 0.0
        self._closed = False

    def prompt(self) -> Prompt | None:
        """The current step's prompt; None once the challenge is over."""
        if self.state != State.PENDING:
            return None
        step = self.steps[self._index]
        return Prompt(
            step,
            self._index + 1,
            len(self.steps),
            self._step_start + self.config.step_timeout_s,
            dict(PROMPTS[step]),
        )

    def _fail(self, cause: Cause, detail: str) -> State:
        self.state, self.cause, self.detail = State.FAILED, cause, detail
        logger.info("challenge failed: %s (%s)", cause.value, detail)
        return self.state

    def _advance(self, t: float) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self.state = State.PASSED
            self.detail = "challenge passed: " + ", ".join(s.value for s in self.steps)
            return
        self._step_start = t
        self._yaw0 = None
        self._closed = False

    def feed(self, frame: LivenessFrame) -> State:
        """Update with one frame; frames without landmarks only advance the clock."""
        if self.state != State.PENDING:
            return self.state
        step = self.steps[self._index]
        if frame.t > self._step_start + self.config.step_timeout_s:
            return self._fail(Cause.CHALLENGE_TIMEOUT, f"{step.value} not seen in time")
        if frame.dense is None:
            return self.state
        points = frame.dense.points
        if self._reference is None:
            self._reference = points
        yaw = yaw_offset(points)
        if self._yaw0 is None:
            self._yaw0 = yaw
        # Operator's left shows as the nose moving to image right, unless the image is mirrored.
        turn = (yaw - self._yaw0) * (-1.0 if self.config.mirror else 1.0)
        if step == Step.BLINK:
            # Only the asked action counts: a recorded clip of someone moving about would
            # otherwise pass a random challenge by chance.
            if abs(turn) >= self.config.turn_yaw:
                return self._fail(Cause.CHALLENGE_WRONG, "turned the head when asked to blink")
            ear = rectified_ear(self._reference, points)
            self._open_ear = max(self._open_ear, ear)
            if ear < self.config.blink_ratio * self._open_ear:
                self._closed = True
            elif self._closed:
                self._advance(frame.t)  # closed, then open again: one blink
            return self.state
        wanted = turn if step == Step.TURN_LEFT else -turn
        if wanted >= self.config.turn_yaw:
            self._advance(frame.t)
        elif -wanted >= self.config.turn_yaw:
            return self._fail(Cause.CHALLENGE_WRONG, f"turned the wrong way for {step.value}")
        return self.state

    @property
    def progress(self) -> float:
        """Steps done / steps asked."""
        return float(np.clip(self._index / len(self.steps), 0.0, 1.0))
