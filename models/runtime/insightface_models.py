"""Wrappers for insightface-format models a user supplies (SCRFD detector, ArcFace recognizer).

insightface's own SCRFD class decodes the detector; the recognizer's preprocessing comes from
the pack manifest rather than from insightface's guess by node names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelError
from models.runtime.base import KeypointScheme, onnx_session
from models.types import Detection, FloatArray, Image

logger = logging.getLogger(__name__)

ARCFACE5_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth", "left_mouth")


class ScrfdDetector:
    """SCRFD face detector with 5 keypoints (insightface's detector format)."""

    keypoint_scheme: KeypointScheme = "arcface5"

    def __init__(
        self, path: Path, input_size: int, score_threshold: float, nms_iou: float, threads: int
    ) -> None:
        from insightface.model_zoo.scrfd import SCRFD

        session = onnx_session(path, threads)
        try:
            self._model = SCRFD(model_file=str(path), session=session)
            self._model.prepare(
                -1,
                det_thresh=score_threshold,
                nms_thresh=nms_iou,
                input_size=(input_size, input_size),
            )
        except Exception as err:  # insightface validates with asserts and ValueErrors
            raise ModelError(f"{path.name}: not a usable SCRFD detector ({err})") from err
        self._input_size = (input_size, input_size)
        self.detect(np.zeros((input_size, input_size, 3), np.uint8))  # warm-up

    def detect(self, image: Image) -> list[Detection]:
        """Faces found, highest score first."""
        try:
            boxes, kpss = self._model.detect(image, input_size=self._input_size)
        except Exception as err:
            raise ModelError(f"SCRFD failed: {err}") from err
        found = []
        for i in np.argsort(-boxes[:, 4]) if len(boxes) else []:
            x0, y0, x1, y1, score = (float(v) for v in boxes[i])
            points = np.asarray(kpss[i], np.float32) if kpss is not None else np.zeros((0, 2))
            found.append(
                Detection((x0, y0, x1, y1), score, points.astype(np.float32), ARCFACE5_NAMES)
            )
        return found


class ArcFaceRecognizer:
    """An ArcFace-format recognizer: 112x112 aligned RGB chip in, embedding out."""

    def __init__(self, path: Path, input_mean: float, input_std: float, threads: int) -> None:
        self._session = onnx_session(path, threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{path.name}: an ArcFace recognizer has one input and one output")
        self._input = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise ModelError(f"{path.name}: expected a [N,3,S,S] input, found {shape}")
        self.chip_size = int(shape[2])
        self.dim = int(outputs[0].shape[-1])
        self._mean, self._std = input_mean, input_std
        self.embed_chips(np.zeros((1, self.chip_size, self.chip_size, 3), np.uint8))

    def embed_chips(self, chips: np.ndarray) -> FloatArray:
        """NxSxSx3 uint8 RGB chips -> NxD raw embeddings."""
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise ModelError(
                f"ArcFace expects Nx{self.chip_size}x{self.chip_size}x3 chips, got {chips.shape}"
            )
        blob = (chips.astype(np.float32).transpose(0, 3, 1, 2) - self._mean) / self._std
        try:
            out = self._session.run(None, {self._input: blob})[0]
        except Exception as err:
            raise ModelError(f"ArcFace recognizer failed: {err}") from err
        return np.asarray(out, np.float32)


def build_scrfd(path: Path, params: Mapping[str, Any], threads: int) -> ScrfdDetector:
    """Factory used by the wrapper registry."""
    return ScrfdDetector(
        path,
        input_size=int(params.get("input_size", 640)),
        score_threshold=float(params.get("score_threshold", 0.5)),
        nms_iou=float(params.get("nms_iou", 0.4)),
        threads=threads,
    )


def build_arcface(path: Path, params: Mapping[str, Any], threads: int) -> ArcFaceRecognizer:
    """Factory used by the wrapper registry."""
    return ArcFaceRecognizer(
        path,
        input_mean=float(params.get("input_mean", 127.5)),
        input_std=float(params.get("input_std", 127.5)),
        threads=threads,
    )
