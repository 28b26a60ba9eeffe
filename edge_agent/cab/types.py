"""Domain types of the edge agent: frozen dataclasses and the fail-closed error."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.codes import GateState, LivenessCheck, ReasonCode
from contract.messages import ClaimInfo, MatchInfo


class GateFault(Exception):
    """A condition that keeps the gate closed; `reason` is what the decision event carries."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


@dataclass(frozen=True)
class Frame:
    """One camera frame and when it was taken (monotonic seconds)."""

    image: np.ndarray = field(repr=False)
    t: float
    index: int = 0


@dataclass(frozen=True)
class Decision:
    """The outcome of one verification; `reason` is AUTHORIZED exactly when authorized."""

    reason: ReasonCode
    detail: str = ""
    operator_id: str | None = None
    match: MatchInfo | None = None
    claim: ClaimInfo | None = None
    frames_used: int = 0
    faces_seen: int = 0
    liveness_score: float | None = None
    evidence_jpeg: bytes | None = field(default=None, repr=False)
    liveness_by: LivenessCheck | None = None
    """How liveness was settled (None when the start did not get that far)."""
    override_granted: bool = False
    """True only for an emergency override whose code verified (reason OVERRIDE)."""

    @property
    def authorized(self) -> bool:
        """AUTHORIZED, or a granted override (which is flagged separately)."""
        return self.reason == ReasonCode.AUTHORIZED or (
            self.reason == ReasonCode.OVERRIDE and self.override_granted
        )


@dataclass(frozen=True)
class Transition:
    """A gate state change and the decision behind it."""

    state_from: GateState
    state_to: GateState
    reason: ReasonCode
    detail: str = ""
