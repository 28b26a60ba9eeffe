"""Temporal liveness: across the frames a real face blinks or moves in a way no flat photo can."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.liveness.config import TemporalConfig
from models.liveness.geometry import (
    LEFT_EYE,
    RIGHT_EYE,
    eye_aspect_ratio,
    planar_residual,
)
from models.liveness.types import Cause, LivenessFrame
from models.types import FloatArray

logger = logging.getLogger(__name__)

_EYE_POINTS = frozenset(RIGHT_EYE + LEFT_EYE)
_STABLE = np.array([i for i in range(468) if i not in _EYE_POINTS])
SPAN_TOLERANCE_S = 1e-3
"""A window spans `min_span_s` when it falls short by less than this (frame times are floats:
12 frames at 15 fps measure 0.79999... s)."""
OPEN_PERCENTILE = 90.0
"""The open-eye level is this percentile of the sequence's (rectified) eye aspect ratios."""


@dataclass(frozen=True)
class TemporalResult:
    """Whether the sequence showed a live face, why not, and the measurements."""

    passed: bool
    cause: Cause | None
    detail: str
    scores: dict[str, float] = field(default_factory=dict)


def rectified_ear(reference: FloatArray, points: FloatArray) -> float:
    """Eye aspect ratio after mapping the face back onto the reference view by a homography.

    The homography is fitted on the non-eye points, so tilting a photo (which squashes the
    eyes in the image) does not look like a blink, while a real lid closing still does.
    """
    homography, _ = cv2.findHomography(
        points[_STABLE, :2].astype(np.float64), reference[_STABLE, :2].astype(np.float64), 0
    )
    if homography is None:
        return eye_aspect_ratio(points)
    mapped = cv2.perspectiveTransform(points[None, :, :2].astype(np.float64), homography)[0]
    return eye_aspect_ratio(mapped.astype(np.float32))


def blink_seen(ears: Sequence[float], ratio: float, min_open: float) -> tuple[bool, float]:
    """(a closed-eye frame between open ones, open-eye level)."""
    values = np.asarray(ears, np.float64)
    open_level = float(np.percentile(values, OPEN_PERCENTILE))
    if open_level < min_open:
        return False, open_level
    closed = np.flatnonzero(values < ratio * open_level)
    opened = np.flatnonzero(values >= ratio * open_level)
    return bool(closed.size and opened.size), open_level


def check_temporal(frames: Sequence[LivenessFrame], config: TemporalConfig) -> TemporalResult:
    """Refuse a face that stays rigid (one plane, no blink) across the frames."""
    dense = [f for f in frames if f.dense is not None]
    if not dense:
        return TemporalResult(False, Cause.NO_LANDMARKS, "no frame has dense landmarks")
    span = dense[-1].t - dense[0].t
    if len(dense) < config.min_frames or span < config.min_span_s - SPAN_TOLERANCE_S:
        return TemporalResult(
            False,
            Cause.TOO_FEW_FRAMES,
            f"{len(dense)} frames over {span:.2f} s; need {config.min_frames} over "
            f"{config.min_span_s} s",
            {"frames": float(len(dense)), "span_s": span},
        )
    points = [f.dense.points for f in dense if f.dense is not None]
    reference = points[0]
    residuals = [planar_residual(reference, p) for p in points[1:]]
    nonrigid = float(np.mean(np.asarray(residuals) > config.nonrigid_residual))
    ears = [rectified_ear(reference, p) for p in points]
    blink, open_level = blink_seen(ears, config.blink_ratio, config.min_open_ear)
    scores = {
        "frames": float(len(dense)),
        "span_s": span,
        "max_planar_residual": float(max(residuals)),
        "nonrigid_fraction": nonrigid,
        "open_ear": open_level,
        "min_ear": float(min(ears)),
        "blink": float(blink),
    }
    if blink or nonrigid >= config.min_nonrigid_fraction:
        return TemporalResult(True, None, "blink" if blink else "non-rigid motion", scores)
    return TemporalResult(
        False,
        Cause.RIGID_FACE,
        f"face stayed planar (non-rigid in {nonrigid:.0%} of frames, max residual "
        f"{max(residuals):.4f}) and did not blink",
        scores,
    )
