"""Passive PAD: a live score per frame, from the pack's ONNX model or from classical cues."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.liveness import cues
from models.liveness.config import CLASSICAL_LIVE, CLASSICAL_SPOOF, PassiveConfig
from models.liveness.onnx_pad import OnnxPad
from models.liveness.types import LivenessFrame, PassiveThresholds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassiveResult:
    """Per-frame live scores (0 = attack, 1 = live), their median, and the cue breakdown."""

    frame_scores: tuple[float, ...]
    score: float
    details: dict[str, float] = field(default_factory=dict)


class PassiveScorer(Protocol):
    """Scores a sequence of frames for presentation attacks, with the bands its score uses."""

    name: str
    thresholds: PassiveThresholds

    def score(self, frames: Sequence[LivenessFrame]) -> PassiveResult:
        """Live scores of (a sample of) the frames."""
        ...


def resolve_thresholds(config: PassiveConfig, carried: PassiveThresholds) -> PassiveThresholds:
    """The config's thresholds where set, the carried ones (pack or classical) otherwise."""
    live, spoof = config.live_threshold, config.spoof_threshold
    if live is None and spoof is None:
        return carried
    sources = {carried.source} if live is None or spoof is None else set()
    return PassiveThresholds(
        carried.live if live is None else live,
        carried.spoof if spoof is None else spoof,
        " + ".join(sorted({"config", *sources})),
    )


def classical_thresholds(config: PassiveConfig) -> PassiveThresholds:
    """The classical cues' bands: the config's, else the documented defaults."""
    return resolve_thresholds(
        config, PassiveThresholds(CLASSICAL_LIVE, CLASSICAL_SPOOF, "classical default")
    )


def sample(frames: Sequence[LivenessFrame], count: int) -> list[LivenessFrame]:
    """At most `count` frames, evenly spaced, first and last included."""
    if len(frames) <= count:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in idx]


class EvenSample:
    """Keeps at most `2 * count` of the frames added so far, evenly spaced, without knowing
    how many will come: when full it drops every second frame kept and doubles its stride.
    Bounds the memory of a stream (the challenge's answer) that is scored once at its end."""

    def __init__(self, count: int) -> None:
        self.count = max(1, count)
        self.stride = 1
        self.seen = 0
        self.kept: list[LivenessFrame] = []

    def add(self, frame: LivenessFrame) -> None:
        """Offer the next frame of the stream."""
        if self.seen % self.stride == 0:
            self.kept.append(frame)
            if len(self.kept) > 2 * self.count:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.seen += 1


def _ramp(value: float, full: float) -> float:
    """0 at 0, 1 at `full` and above."""
    return float(min(1.0, max(0.0, value / full))) if full > 0 else 0.0


class ClassicalPad:
    """Weight-free PAD from frame border, moiré, glare and face-vs-background parallax."""

    name = "classical"

    def __init__(self, config: PassiveConfig) -> None:
        self.config = config
        self.thresholds = classical_thresholds(config)

    def frame_evidence(self, frame: LivenessFrame) -> dict[str, float]:
        """Attack evidence in [0, 1] per cue for one frame."""
        c = self.config
        box = frame.face.detection.box
        border = cues.border_score(cues.border_sides(frame.image, box, c.cues))
        moire = _ramp(cues.moire_ratio(frame.image, box, c.cues), c.moire_peak_ratio)
        glare = _ramp(cues.specular_fraction(frame.image, box, c.cues), c.specular_fraction)
        return {"border": border, "moire": moire, "specular": glare}

    def parallax_evidence(self, frames: Sequence[LivenessFrame]) -> float | None:
        """Fraction of informative frame pairs whose background moved with the face."""
        ratios = []
        for prev, cur in zip(frames, frames[1:], strict=False):
            ratio = cues.parallax_comotion(
                prev.image,
                cur.image,
                prev.face.detection.box,
                cur.face.detection.box,
                self.config.parallax,
            )
            if ratio is not None:
                ratios.append(ratio)
        if not ratios:
            return None
        return float(np.mean(np.asarray(ratios) >= self.config.parallax.comove_ratio))

    def score(self, frames: Sequence[LivenessFrame]) -> PassiveResult:
        """Live score per sampled frame: the product of (1 - weight x evidence) over cues."""
        c = self.config
        chosen = sample(frames, c.max_frames)
        weights = {
            "border": c.border_weight,
            "moire": c.moire_weight,
            "specular": c.specular_weight,
        }
        evidence = [self.frame_evidence(f) for f in chosen]
        parallax = self.parallax_evidence(chosen)
        parallax_factor = 1.0 - c.parallax_weight * (parallax or 0.0)
        scores = []
        for ev in evidence:
            live = parallax_factor
            for cue, weight in weights.items():
                live *= 1.0 - weight * ev[cue]
            scores.append(live)
        details = {
            f"{cue}_evidence": float(np.mean([ev[cue] for ev in evidence])) for cue in weights
        }
        if parallax is not None:
            details["parallax_evidence"] = parallax
        return PassiveResult(tuple(scores), float(np.median(scores)), details)


class ModelPad:
    """Passive PAD with the pack's ONNX model (task `liveness`).

    A frame is scored once: the gate re-evaluates a growing window after every frame, so the
    scores of the frames already seen are kept, by frame identity, without keeping the
    frames themselves alive (a weak reference; at most `MEMO` entries).
    """

    name = "onnx"
    MEMO = 512

    def __init__(self, model: OnnxPad, config: PassiveConfig, thresholds: PassiveThresholds):
        self.model = model
        self.config = config
        self.thresholds = resolve_thresholds(config, thresholds)
        self._memo: dict[int, tuple[weakref.ref[LivenessFrame], float]] = {}

    def frame_score(self, frame: LivenessFrame) -> float:
        """The model's live probability of one frame's face (computed once per frame)."""
        kept = self._memo.get(id(frame))
        if kept is not None and kept[0]() is frame:
            return kept[1]
        value = float(self.model.score(frame.image, [frame.face.detection.box])[0])
        if len(self._memo) >= self.MEMO:
            self._memo = {k: v for k, v in self._memo.items() if v[0]() is not None}
            while len(self._memo) >= self.MEMO:
                self._memo.pop(next(iter(self._memo)))
        self._memo[id(frame)] = (weakref.ref(frame), value)
        return value

    def score(self, frames: Sequence[LivenessFrame]) -> PassiveResult:
        """The model's live probability per sampled frame, and their median."""
        chosen = sample(frames, self.config.max_frames)
        scores = [self.frame_score(f) for f in chosen]
        return PassiveResult(tuple(scores), float(np.median(scores)), {})
