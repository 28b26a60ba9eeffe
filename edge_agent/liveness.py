"""The liveness policy hook: every frame goes through a `LivenessCheck` before matching."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_agent.config import LivenessSection
from models.types import Face

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessResult:
    """Whether a frame looks like a live person; `score` is None when nothing was measured."""

    passed: bool
    score: float | None
    method: str


class LivenessCheck(Protocol):
    """A presentation-attack check on one face in one frame."""

    name: str

    def check(self, image: np.ndarray, face: Face) -> LivenessResult:
        """Judge one face."""
        ...


class NoLivenessCheck:
    """Performs NO presentation-attack detection: every frame passes, score None.

    A printed photo or a phone screen showing an enrolled operator is accepted. This is the
    only policy available until a liveness model exists (separate issue); the events say so
    by carrying `liveness_score: null`.
    """

    name = "none"

    def __init__(self) -> None:
        logger.warning("liveness policy 'none': printed photos and screens are NOT refused")

    def check(self, image: np.ndarray, face: Face) -> LivenessResult:
        """Pass every face without measuring anything."""
        return LivenessResult(passed=True, score=None, method=self.name)


def build_liveness(section: LivenessSection) -> LivenessCheck:
    """The configured liveness policy."""
    if section.policy == "none":
        return NoLivenessCheck()
    raise ValueError(f"unknown liveness policy {section.policy!r}")
