"""Landmark geometry on FaceMesh points: eye aspect ratio, yaw, planar-fit residual."""

from __future__ import annotations

import cv2
import numpy as np

from models.types import FloatArray

# FaceMesh (468-point) indices. Eye contours: corner, two upper lid points, corner, two lower
# lid points, in the order the eye-aspect-ratio formula pairs them.
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
NOSE_TIP = 1
CHEEK_IMAGE_LEFT = 234
CHEEK_IMAGE_RIGHT = 454
OUTER_EYE_CORNERS = (33, 263)


def eye_aspect_ratio(points: FloatArray) -> float:
    """Mean eye aspect ratio of both eyes (lid gap / eye width); ~0.3 open, <0.15 closed."""

    def one(idx: tuple[int, ...]) -> float:
        p = points[list(idx), :2].astype(np.float64)
        width = float(np.linalg.norm(p[0] - p[3]))
        if width <= 0:
            return 0.0
        gap = float(np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4]))
        return gap / (2.0 * width)

    return (one(RIGHT_EYE) + one(LEFT_EYE)) / 2.0


def yaw_offset(points: FloatArray) -> float:
    """Nose tip offset from the cheek midpoint, in cheek widths; positive = nose toward image right.

    A planar photo turned in front of the camera keeps this ratio (an affine view of a plane
    preserves ratios along a line), so only a real head turn moves it.
    """
    left = points[CHEEK_IMAGE_LEFT, 0]
    right = points[CHEEK_IMAGE_RIGHT, 0]
    width = float(right - left)
    if abs(width) < 1e-6:
        return 0.0
    return float((points[NOSE_TIP, 0] - left) / width - 0.5)


def inter_ocular(points: FloatArray) -> float:
    """Distance between the outer eye corners, pixels."""
    a, b = OUTER_EYE_CORNERS
    return float(np.linalg.norm(points[a, :2] - points[b, :2]))


def planar_residual(a: FloatArray, b: FloatArray) -> float:
    """RMS landmark residual after the best homography a->b, in inter-ocular distances of b.

    Any view of a flat photo (moved, tilted, turned) maps onto another by a homography, so a
    printed face leaves only landmark noise here; a real head turning or a face changing
    expression does not fit a plane.
    """
    src = a[:, :2].astype(np.float64)
    dst = b[:, :2].astype(np.float64)
    homography, _ = cv2.findHomography(src, dst, 0)
    iod = inter_ocular(b)
    if homography is None or iod <= 0:
        return 0.0
    projected = cv2.perspectiveTransform(src[None], homography)[0]
    rms = float(np.sqrt(np.mean(np.sum((projected - dst) ** 2, axis=1))))
    return rms / iod
