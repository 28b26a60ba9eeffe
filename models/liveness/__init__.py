"""Liveness (presentation-attack detection) for the cab start gate.

`LivenessPolicy(config).evaluate(frames)` -> `LivenessDecision`; frames come from
`observe(engine, image, t)`. See models.liveness.config for every threshold.
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
