"""FaceMesh (mediapipe face_landmark, Apache-2.0): 468 dense 3-D landmarks inside a face.

An optional pack component for liveness cues (blinks, head turns, rigid motion). The face is
cropped square around the detection, rotated so the eyes are level (the model was trained on
upright faces), resized to 192 px, and the landmarks are mapped back to image pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from models.errors import ModelError
from models.runtime.base import onnx_session
from models.runtime.image import to_bgr
from models.types import Detection, FloatArray, Image

logger = logging.getLogger(__name__)

INPUT_SIZE = 192
CROP_SCALE = 1.5
"""Crop side as a multiple of the detection box side: mediapipe's face-landmark ROI uses 1.5."""
POINTS = 468


@dataclass(frozen=True)
class DenseLandmarks:
    """468 points (x, y in image pixels; z relative depth in the same scale) and a face score."""

    points: FloatArray
    face_score: float
    """Probability that the crop shows a face (sigmoid of the model's face flag)."""


class FaceMesh:
    """FaceMesh on onnxruntime."""

    def __init__(self, path: Path, threads: int) -> None:
        self._session = onnx_session(path, threads)
        names = [o.name for o in self._session.get_outputs()]
        if "landmarks" not in names or "face_flag" not in names:
            raise ModelError(f"{path.name}: not a FaceMesh graph (outputs {names})")
        self._input = self._session.get_inputs()[0].name
        self._run(np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32))

    def _run(self, blob: npt.NDArray[np.float32]) -> tuple[np.ndarray, float]:
        try:
            landmarks, flag = self._session.run(["landmarks", "face_flag"], {self._input: blob})
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"FaceMesh failed: {err}") from err
        return np.asarray(landmarks, np.float32).reshape(POINTS, 3), float(np.ravel(flag)[0])

    def landmarks(self, image: Image, detection: Detection) -> DenseLandmarks:
        """Dense landmarks of the face in `detection`."""
        bgr = to_bgr(image)
        x0, y0, x1, y1 = detection.box
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        side = CROP_SCALE * max(x1 - x0, y1 - y0)
        angle = _roll_degrees(detection)
        scale = INPUT_SIZE / side
        forward = cv2.getRotationMatrix2D(centre, angle, scale)
        forward[:, 2] += np.array([INPUT_SIZE / 2 - centre[0], INPUT_SIZE / 2 - centre[1]])
        crop = cv2.warpAffine(
            bgr,
            forward,
            (INPUT_SIZE, INPUT_SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        points, flag = self._run(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
        back = cv2.invertAffineTransform(forward)
        xy = points[:, :2] @ back[:, :2].T + back[:, 2]
        out = np.concatenate([xy, points[:, 2:3] / scale], axis=1).astype(np.float32)
        return DenseLandmarks(out, 1.0 / (1.0 + math.exp(-flag)))


def _roll_degrees(detection: Detection) -> float:
    """In-plane rotation that levels the eyes (0 when the detector gives no eye points)."""
    names = detection.keypoint_names
    if "right_eye" not in names or "left_eye" not in names:
        return 0.0
    a = detection.keypoints[names.index("right_eye")]
    b = detection.keypoints[names.index("left_eye")]
    left, right = (a, b) if a[0] <= b[0] else (b, a)
    return math.degrees(math.atan2(float(right[1] - left[1]), float(right[0] - left[0])))


def build(path: Path, params: Mapping[str, Any], threads: int) -> FaceMesh:
    """Factory used by the wrapper registry."""
    return FaceMesh(path, threads=min(threads, int(params.get("threads", threads))))
