"""Liveness (presentation-attack detection) for the cab start gate.

How the cab agent uses it (every threshold is in `LivenessPolicyConfig`):

    policy = LivenessPolicy(config, passive_scorer_for(engine, config))
    frames = [f for f in (observe(engine, image, t) for image, t in camera) if f]
    decision = policy.evaluate(frames)            # LIVE, REFUSED or CHALLENGE
    if decision.outcome is Outcome.CHALLENGE:
        session = policy.start_challenge(start=t_now)
        while (prompt := session.prompt()) is not None:   # show/speak prompt.text
            frame = observe(engine, image, t)             # kept in `answered` when not None
            session.feed(frame or LivenessFrame(image, last_face, t))
        decision = policy.finish_challenge(session, decision.scores, answered)
    # refused: decision.reason is ReasonCode.LIVENESS_FAILED, decision.cause says why
"""

from models.liveness.active import PROMPTS, ChallengeSession, Prompt, State, Step
from models.liveness.config import (
    ActiveConfig,
    ActiveMode,
    LivenessPolicyConfig,
    PassiveConfig,
    TemporalConfig,
)
from models.liveness.policy import LivenessPolicy, observe, passive_scorer_for
from models.liveness.types import Cause, LivenessDecision, LivenessFrame, Outcome

__all__ = [
    "PROMPTS",
    "ActiveConfig",
    "ActiveMode",
    "Cause",
    "ChallengeSession",
    "LivenessDecision",
    "LivenessFrame",
    "LivenessPolicy",
    "LivenessPolicyConfig",
    "Outcome",
    "PassiveConfig",
    "Prompt",
    "State",
    "Step",
    "TemporalConfig",
    "observe",
    "passive_scorer_for",
]
