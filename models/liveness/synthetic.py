"""Generated presentation attacks for tests, the bench and the demo (no data needed).

`rigid_sequence` is a printed photo held in front of the camera: one still image moved as a
flat sheet (shift, in-plane turn, slight perspective tilt), so every frame is a homography of
the first. `framed_face` is a face crop shown inside a bright rectangle (a phone or monitor).
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from models.types import Image

Frames = list[tuple[Image, float]]


def rigid_sequence(
    image: Image,
    frames: int,
    fps: float = 15.0,
    seed: int = 0,
    shift: float = 0.03,
    turn_deg: float = 3.0,
    tilt: float = 0.04,
) -> Frames:
    """`frames` homographies of a still photo with timestamps; `shift`/`tilt` in image sides."""
    if frames < 1 or fps <= 0:
        raise ValueError("frames must be >= 1 and fps > 0")
    rng = random.Random(seed)
    h, w = image.shape[:2]
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    out: Frames = []
    for i in range(frames):
        phase = 2 * math.pi * i / max(frames, 2)
        dx = shift * w * math.sin(phase) + rng.uniform(-0.2, 0.2) * shift * w
        dy = shift * h * math.cos(phase) * 0.5
        angle = math.radians(turn_deg * math.sin(phase * 0.7))
        k = tilt * math.sin(phase * 1.3)  # sheet leaning back and forth: a trapezoid
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        centred = corners - np.array([w / 2, h / 2], np.float32)
        moved = centred @ rot.T + np.array([w / 2 + dx, h / 2 + dy])
        moved[:2, 0] += np.array([k * w, -k * w])  # top edge narrows or widens
        matrix = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
        warped = cv2.warpPerspective(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
        out.append((np.asarray(warped, np.uint8), i / fps))
    return out


def framed_face(
    face: Image,
    canvas_size: tuple[int, int] = (480, 640),
    bezel: float = 0.25,
    level: int = 40,
) -> Image:
    """A face image shown on a bright screen with a dark bezel, in a dim scene."""
    h, w = canvas_size
    canvas = np.full((h, w, 3), level, np.uint8)
    fh, fw = face.shape[:2]
    scale = min(0.6 * h / fh, 0.6 * w / fw)
    shown = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sh, sw = shown.shape[:2]
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    pad = int(bezel * min(sh, sw) / 4)
    cv2.rectangle(
        canvas,
        (x0 - 2 * pad, y0 - 2 * pad),
        (x0 + sw + 2 * pad, y0 + sh + 2 * pad),
        (10, 10, 10),
        -1,
    )
    cv2.rectangle(canvas, (x0 - pad, y0 - pad), (x0 + sw + pad, y0 + sh + pad), (250, 250, 250), -1)
    canvas[y0 : y0 + sh, x0 : x0 + sw] = cv2.convertScaleAbs(shown, alpha=1.1, beta=30)
    return canvas
