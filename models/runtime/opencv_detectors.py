"""User-supplied detectors: YuNet (box + 5 points, via OpenCV) and Ultra-Light (boxes only)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.errors import ModelError
from models.runtime.base import KeypointScheme, onnx_session
from models.runtime.insightface_models import ARCFACE5_NAMES
from models.types import Detection, Image

logger = logging.getLogger(__name__)


class YuNetDetector:
    """YuNet through cv2.FaceDetectorYN; its 5 points follow the arcface5 order."""

    keypoint_scheme: KeypointScheme = "arcface5"

    def __init__(self, path: Path, score_threshold: float, nms_iou: float, top_k: int) -> None:
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), score_threshold, nms_iou, top_k
            )
        except cv2.error as err:
            raise ModelError(f"{path.name}: OpenCV cannot load it as YuNet ({err})") from err
        self.detect(np.zeros((240, 320, 3), np.uint8))

    def detect(self, image: Image) -> list[Detection]:
        """Faces found, highest score first."""
        h, w = image.shape[:2]
        try:
            self._net.setInputSize((w, h))
            _, rows = self._net.detect(image)
        except cv2.error as err:
            raise ModelError(f"YuNet failed: {err}") from err
        if rows is None:
            return []
        found = []
        for row in sorted(rows, key=lambda r: -float(r[14])):
            x, y, bw, bh = (float(v) for v in row[:4])
            points = np.asarray(row[4:14], np.float32).reshape(5, 2)
            found.append(Detection((x, y, x + bw, y + bh), float(row[14]), points, ARCFACE5_NAMES))
        return found


class UltraLightDetector:
    """Ultra-Light-Fast-Generic face detector (boxes only; pair it with a landmark model)."""

    keypoint_scheme: KeypointScheme = "none"

    def __init__(self, path: Path, score_threshold: float, nms_iou: float, threads: int) -> None:
        self._session = onnx_session(path, threads)
        inputs = self._session.get_inputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise ModelError(f"{path.name}: expected one fixed [1,3,H,W] input, found {shape}")
        self._input = inputs[0].name
        self._size = (int(shape[3]), int(shape[2]))  # (width, height)
        self._score, self._iou = score_threshold, nms_iou
        self.detect(np.zeros((240, 320, 3), np.uint8))

    def detect(self, image: Image) -> list[Detection]:
        """Faces found, highest score first."""
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(image, self._size), cv2.COLOR_BGR2RGB)
        # The published models were trained on (pixel - 127) / 128.
        blob = ((rgb.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
        try:
            scores, boxes = self._session.run(None, {self._input: blob})
        except Exception as err:
            raise ModelError(f"Ultra-Light failed: {err}") from err
        face_scores = scores[0, :, 1]
        keep = np.flatnonzero(face_scores >= self._score)
        if keep.size == 0:
            return []
        corners = boxes[0, keep] * np.array([w, h, w, h], np.float32)
        xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in corners]
        picked = cv2.dnn.NMSBoxes(xywh, face_scores[keep].tolist(), self._score, self._iou)
        found = []
        for i in sorted(np.asarray(picked).reshape(-1), key=lambda j: -face_scores[keep[j]]):
            x0, y0, x1, y1 = (float(v) for v in corners[i])
            found.append(
                Detection(
                    (x0, y0, x1, y1), float(face_scores[keep[i]]), np.zeros((0, 2), np.float32)
                )
            )
        return found


def build_yunet(path: Path, params: Mapping[str, Any], threads: int) -> YuNetDetector:
    """Factory used by the wrapper registry."""
    return YuNetDetector(
        path,
        score_threshold=float(params.get("score_threshold", 0.7)),
        nms_iou=float(params.get("nms_iou", 0.3)),
        top_k=int(params.get("top_k", 50)),
    )


def build_ultralight(path: Path, params: Mapping[str, Any], threads: int) -> UltraLightDetector:
    """Factory used by the wrapper registry."""
    return UltraLightDetector(
        path,
        score_threshold=float(params.get("score_threshold", 0.7)),
        nms_iou=float(params.get("nms_iou", 0.3)),
        threads=threads,
    )
