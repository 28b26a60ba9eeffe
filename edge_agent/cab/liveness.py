"""Liveness at the cab gate: the sequence policy of `models.liveness` over the window's frames.

The gate keeps one `LivenessFrame` (face + FaceMesh points) per usable frame, asks the policy
once the window holds enough of them, and runs the challenge-response when the policy asks
for it, showing and speaking each prompt through the `CabDisplay` boundary.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from contract.codes import LivenessCheck
from edge_agent.config import LivenessSection
from models.engine import FaceEngine
from models.liveness import (
    ActiveMode,
    LivenessDecision,
    LivenessFrame,
    LivenessPolicy,
    Outcome,
    Prompt,
    passive_scorer_for,
)
from models.liveness.passive import EvenSample, ModelPad
from models.liveness.temporal import SPAN_TOLERANCE_S
from models.types import Face, Task

logger = logging.getLogger(__name__)


class CabDisplay(Protocol):
    """The cab screen and speaker: shows and speaks a challenge prompt."""

    def show(self, prompt: Prompt, languages: Sequence[str]) -> None:
        """Show and speak `prompt` in `languages`."""
        ...

    def clear(self) -> None:
        """Nothing to ask any more."""
        ...


class SimulatedDisplay:
    """A cab display with no hardware: logs each prompt and keeps it for the status endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: dict[str, str] | None = None
        self.shown: list[Prompt] = []

    def show(self, prompt: Prompt, languages: Sequence[str]) -> None:
        """Log the prompt (every language) and make it the current one."""
        text = {lang: prompt.text[lang] for lang in languages if lang in prompt.text}
        with self._lock:
            self.current = text
            self.shown.append(prompt)
        logger.info(
            "liveness challenge %d/%d: %s",
            prompt.index,
            prompt.total,
            " / ".join(text.values()),
        )

    def clear(self) -> None:
        """No prompt on screen."""
        with self._lock:
            self.current = None


FrameSource = Callable[[float], tuple[np.ndarray, float] | None]
"""A frame for the challenge: (image, frame time), or None when none arrived within the timeout."""


@dataclass(frozen=True)
class LivenessVerdict:
    """What liveness concluded for one decision window."""

    live: bool
    score: float | None
    """The passive live score (0..1) the event carries; None when nothing was measured."""
    detail: str
    decision: LivenessDecision | None = None
    by: LivenessCheck = LivenessCheck.NONE
    """How it was settled: passive alone, the challenge, or no check."""


class GateLiveness(Protocol):
    """What the verifier asks of a liveness policy."""

    name: str
    display: SimulatedDisplay | CabDisplay
    passive_pad: str | None
    """The pack's passive PAD component in use, or None (classical cues, or no checks)."""

    def frame(self, image: np.ndarray, face: Face, t: float) -> LivenessFrame | None:
        """The frame as the policy sees it (None when the policy needs no frames)."""
        ...

    def frames_needed(self, frames: Sequence[LivenessFrame]) -> bool:
        """True while the window does not yet hold enough frames to judge."""
        ...

    def settle(self, frames: Sequence[LivenessFrame]) -> tuple[bool, LivenessVerdict | None]:
        """Once enough frames are held: (done, verdict). Done with a verdict: live already;
        done without one: stop observing and `judge` (which may run the challenge); not done:
        keep observing."""
        ...

    def judge(
        self, frames: Sequence[LivenessFrame], source: FrameSource, face_of: FaceFinder
    ) -> LivenessVerdict:
        """Evaluate the window (and run the challenge when asked)."""
        ...


FaceFinder = Callable[[np.ndarray], Face | None]
"""The operator's face in an image (largest detection), or None."""


class NoLiveness:
    """Performs NO presentation-attack detection: a printed photo or a screen is accepted."""

    name = "none"
    passive_pad: str | None = None

    def __init__(self) -> None:
        self.display: SimulatedDisplay | CabDisplay = SimulatedDisplay()
        logger.warning(
            "liveness policy 'none': NO presentation-attack detection; printed photos and "
            "phone screens of an enrolled operator WILL start the machine"
        )

    def frame(self, image: np.ndarray, face: Face, t: float) -> LivenessFrame | None:
        """Nothing is kept."""
        return None

    def frames_needed(self, frames: Sequence[LivenessFrame]) -> bool:
        """Never waits for frames."""
        return False

    def settle(self, frames: Sequence[LivenessFrame]) -> tuple[bool, LivenessVerdict | None]:
        """Always settled live."""
        return True, LivenessVerdict(True, None, "liveness policy none: not checked")

    def judge(
        self, frames: Sequence[LivenessFrame], source: FrameSource, face_of: FaceFinder
    ) -> LivenessVerdict:
        """Always live, nothing measured."""
        return LivenessVerdict(True, None, "liveness policy none: not checked")


class SequenceLiveness:
    """`models.liveness.LivenessPolicy` over the window: passive, temporal, challenge."""

    def __init__(
        self,
        engine: FaceEngine,
        section: LivenessSection,
        display: CabDisplay | None = None,
    ) -> None:
        self.engine = engine
        self.section = section
        config = section.policy_config()
        scorer = passive_scorer_for(engine, config)
        self.policy = LivenessPolicy(config, scorer)
        self.display: SimulatedDisplay | CabDisplay = display or SimulatedDisplay()
        self.name = self.policy.description
        entry = engine.manifest.file(Task.LIVENESS)
        self.passive_pad = entry.path if isinstance(scorer, ModelPad) and entry else None
        self.thresholds = scorer.thresholds
        if self.passive_pad is None and config.require_passive:
            # Without a model the classical cues rarely reach a confident live score, so
            # `active: when_uncertain` asks nearly every operator for the challenge.
            logger.warning(
                "pack %s has no passive PAD model: passive liveness uses the classical cues "
                "and falls back to the challenge when they are uncertain",
                engine.manifest.name,
            )
        if engine.dense is None and config.require_temporal:
            # Without FaceMesh the temporal check cannot pass: every start is refused.
            logger.error("the model pack has no dense landmarks: temporal liveness refuses all")
        logger.info("liveness policy: %s", self.name)

    def frame(self, image: np.ndarray, face: Face, t: float) -> LivenessFrame | None:
        """The face with its FaceMesh points (observe() without a second detection)."""
        dense = self.engine.dense_landmarks(image, face) if self.engine.dense is not None else None
        return LivenessFrame(image, face, t, dense)

    def frames_needed(self, frames: Sequence[LivenessFrame]) -> bool:
        """True until the temporal check has its minimum frames and time span."""
        config = self.policy.config
        if not config.enabled:
            return False
        if not frames:
            return True
        if config.require_temporal:
            span = frames[-1].t - frames[0].t
            short = span < config.temporal.min_span_s - SPAN_TOLERANCE_S
            return len(frames) < config.temporal.min_frames or short
        return len(frames) < min(config.passive.max_frames, 2)

    def settle(self, frames: Sequence[LivenessFrame]) -> tuple[bool, LivenessVerdict | None]:
        """With a PAD model: live as soon as the policy finds the frames live without a
        challenge; stop observing when the challenge is certain (`active: always`) or
        `observe_s` has passed since the first frame; keep observing otherwise.

        Without one (classical cues) the window is judged once, as soon as it holds its
        minimum: the cues are no confident live score, and judging every new frame would give
        an attack many tries at a lucky one. The challenge stays the fallback."""
        if self.passive_pad is None:
            return True, None
        decision = self.policy.evaluate(frames)
        if decision.live:
            return True, self._verdict(decision, LivenessCheck.PASSIVE)
        span = frames[-1].t - frames[0].t if frames else 0.0
        always = self.policy.config.active == ActiveMode.ALWAYS
        return always or span >= self.section.observe_s, None

    def judge(
        self, frames: Sequence[LivenessFrame], source: FrameSource, face_of: FaceFinder
    ) -> LivenessVerdict:
        """Evaluate the policy; run the challenge when it is uncertain (or always, per config)."""
        decision = self.policy.evaluate(frames)
        by = LivenessCheck.PASSIVE
        if decision.outcome == Outcome.CHALLENGE:
            start = frames[-1].t if frames else 0.0
            decision = self._challenge(start, source, face_of, decision)
            by = LivenessCheck.CHALLENGE
        return self._verdict(decision, by)

    @staticmethod
    def _verdict(decision: LivenessDecision, by: LivenessCheck) -> LivenessVerdict:
        score = decision.scores.get("passive")
        if score is not None and (math.isnan(score) or not 0.0 <= score <= 1.0):
            score = None if math.isnan(score) else min(1.0, max(0.0, score))
        if decision.live:
            return LivenessVerdict(True, score, decision.detail, decision, by)
        cause = decision.cause.value if decision.cause is not None else "refused"
        return LivenessVerdict(False, score, f"liveness {cause}: {decision.detail}", decision, by)

    def _challenge(
        self,
        start: float,
        source: FrameSource,
        face_of: FaceFinder,
        first: LivenessDecision,
    ) -> LivenessDecision:
        """Prompt each step, feed frames until the session ends (time limit on the frame clock)."""
        session = self.policy.start_challenge(start=start)
        languages = self.section.prompt_languages
        shown: Prompt | None = None
        wall_deadline = time.monotonic() + session.config.step_timeout_s * len(session.steps)
        last_face: Face | None = None
        answered = EvenSample(self.policy.config.passive.max_frames)
        try:
            while (prompt := session.prompt()) is not None:
                if prompt != shown:
                    self.display.show(prompt, languages)
                    shown = prompt
                got = source(self.section.challenge_poll_s)
                if got is None:
                    # No frame at all (camera stalled): the challenge times out on the wall clock.
                    if time.monotonic() > wall_deadline:
                        break
                    continue
                image, t = got
                face = face_of(image)
                if face is not None:
                    last_face = face
                    frame = self.frame(image, face, t) or LivenessFrame(image, face, t)
                    answered.add(frame)
                    session.feed(frame)
                elif last_face is not None:
                    # No face: the clock still runs, so looking away times the step out.
                    session.feed(LivenessFrame(image, last_face, t))
        finally:
            self.display.clear()
        return self.policy.finish_challenge(session, first.scores, answered.kept)


def build_liveness(
    section: LivenessSection, engine: FaceEngine, display: CabDisplay | None = None
) -> GateLiveness:
    """The configured liveness policy."""
    if not section.active_checks:
        return NoLiveness()
    return SequenceLiveness(engine, section, display)
