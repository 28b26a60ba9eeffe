"""Classical presentation-attack cues: frame border, moiré, glare, and face-vs-background parallax.

Each per-frame cue returns evidence of an attack in [0, 1] (0 = none seen). They need no
weights; `bench/liveness.py` measures which of them separate live from spoof on real frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from models.liveness.config import CueConfig, ParallaxConfig
from models.runtime.image import to_gray
from models.types import Image

Box = tuple[float, float, float, float]

CANNY_LOW = 50
CANNY_HIGH = 150
"""Canny hysteresis thresholds (8-bit gradient units): OpenCV's usual pair for photos."""
HOUGH_VOTES = 30
HOUGH_MAX_GAP_FRACTION = 0.05
"""Gap bridged inside one straight edge, as a fraction of the context window side."""


@dataclass(frozen=True)
class FrameCues:
    """Per-frame attack evidence, each in [0, 1]."""

    border: float
    """Sides of the face (left, right, top, bottom) with a straight edge beside it / 4, with
    opposite sides counted double: a screen or paper edge on both sides means a frame."""
    moire: float
    """Height of the strongest isolated high-frequency spectral peak over the band median."""
    specular: float
    """Fraction of near-white, unsaturated pixels in the face box."""


def _square(box: Box, scale: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = scale * max(x1 - x0, y1 - y0) / 2
    return cx - half, cy - half, cx + half, cy + half


def _crop(image: np.ndarray, box: tuple[float, float, float, float]) -> tuple[np.ndarray, int, int]:
    h, w = image.shape[:2]
    xa, ya = max(0, int(box[0])), max(0, int(box[1]))
    xb, yb = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    return image[ya:yb, xa:xb], xa, ya


def border_sides(image: Image, box: Box, config: CueConfig) -> tuple[bool, bool, bool, bool]:
    """Whether a long straight edge runs beside the face on its left, right, top, bottom."""
    gray = to_gray(image)
    context, ox, oy = _crop(gray, _square(box, config.context_scale))
    side = max(box[2] - box[0], box[3] - box[1])
    if context.size == 0 or side <= 0:
        return (False, False, False, False)
    edges = cv2.Canny(context, CANNY_LOW, CANNY_HIGH)
    min_len = config.border_min_length * side
    lines = cv2.HoughLinesP(
        edges,
        1,
        math.pi / 180,
        HOUGH_VOTES,
        minLineLength=min_len,
        maxLineGap=HOUGH_MAX_GAP_FRACTION * max(context.shape),
    )
    gap = config.border_gap * side
    fx0, fy0, fx1, fy1 = box[0] - gap, box[1] - gap, box[2] + gap, box[3] + gap
    tilt = math.radians(config.border_max_tilt_deg)
    found = [False, False, False, False]
    for x_a, y_a, x_b, y_b in lines.reshape(-1, 4) if lines is not None else []:
        xa, ya, xb, yb = x_a + ox, y_a + oy, x_b + ox, y_b + oy
        angle = math.atan2(abs(yb - ya), abs(xb - xa))
        if angle > math.pi / 2 - tilt:  # near vertical
            if max(xa, xb) < fx0:
                found[0] = True
            elif min(xa, xb) > fx1:
                found[1] = True
        elif angle < tilt:  # near horizontal
            if max(ya, yb) < fy0:
                found[2] = True
            elif min(ya, yb) > fy1:
                found[3] = True
    return (found[0], found[1], found[2], found[3])


def border_score(sides: tuple[bool, bool, bool, bool]) -> float:
    """Attack evidence from border sides: a frame on opposite sides or three sides is full evidence."""
    left, right, top, bottom = sides
    if (left and right) or (top and bottom) or sum(sides) >= 3:
        return 1.0
    return 0.25 * sum(sides)


def moire_ratio(image: Image, box: Box, config: CueConfig) -> float:
    """Strongest high-frequency spectral peak of the face over the band's median magnitude."""
    crop, _, _ = _crop(to_gray(image), box)
    if crop.size < 16:
        return 0.0
    n = config.moire_size
    patch = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
    patch -= float(patch.mean())
    window = np.outer(np.hanning(n), np.hanning(n)).astype(np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(patch * window)))
    yy, xx = np.mgrid[:n, :n]
    radius = np.hypot(yy - n / 2, xx - n / 2) / (n / 2)
    band = (radius >= config.moire_min_radius) & (radius <= 1.0)
    values = spectrum[band]
    median = float(np.median(values))
    return float(values.max()) / median if median > 0 else 0.0


def specular_fraction(image: Image, box: Box, config: CueConfig) -> float:
    """Fraction of glare pixels (bright, colourless) in the face box."""
    crop, _, _ = _crop(image, box)
    if crop.size == 0:
        return 0.0
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    glare = (hsv[:, :, 2] >= config.specular_value) & (hsv[:, :, 1] <= config.specular_saturation)
    return float(np.mean(glare))


def parallax_comotion(
    previous: Image, current: Image, box_prev: Box, box_cur: Box, config: ParallaxConfig
) -> float | None:
    """Background-ring motion over face motion between two frames; None when the face kept still.

    A real face moves in front of a still background (ratio near 0); a hand-held photo or
    phone carries its surround with the face (ratio near 1).
    """
    side = max(box_prev[2] - box_prev[0], box_prev[3] - box_prev[1])
    face_shift = np.hypot(
        (box_cur[0] + box_cur[2] - box_prev[0] - box_prev[2]) / 2,
        (box_cur[1] + box_cur[3] - box_prev[1] - box_prev[3]) / 2,
    )
    if side <= 0 or face_shift < config.min_face_motion * side:
        return None
    gray_prev, gray_cur = to_gray(previous), to_gray(current)
    mask = np.zeros(gray_prev.shape, np.uint8)
    ox0, oy0, ox1, oy1 = (int(v) for v in _square(box_prev, config.ring_outer))
    ix0, iy0, ix1, iy1 = (int(v) for v in _square(box_prev, config.ring_inner))
    cv2.rectangle(mask, (ox0, oy0), (ox1, oy1), 255, -1)
    cv2.rectangle(mask, (ix0, iy0), (ix1, iy1), 0, -1)
    corners = cv2.goodFeaturesToTrack(
        gray_prev, config.max_points, qualityLevel=0.01, minDistance=5, mask=mask
    )
    if corners is None or len(corners) < 4:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(
        gray_prev, gray_cur, corners, np.empty_like(corners)
    )
    ok = status.ravel() == 1
    if ok.sum() < 4:
        return None
    flow = np.linalg.norm((moved - corners).reshape(-1, 2)[ok], axis=1)
    return float(np.median(flow) / face_shift)
