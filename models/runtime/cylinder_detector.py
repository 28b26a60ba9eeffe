"""Runtime of the trained cylinder detector (task `cylinder_detector`, wrapper `centernet_cylinder`).

ONNX contract (training/station_detector.py builds it): input `image` float32 [N,3,H,W], RGB,
raw pixel values 0..255 of the frame letterboxed into W x H (`letterbox`: scaled to fit,
centred, padded with `pad_value`); outputs `heat` float32 [N,1,H/s,W/s], the cylinder-centre
probability already reduced to local maxima (3x3), and `boxes` float32 [N,4,H/s,W/s], the box
x0, y0, x1, y1 predicted at each cell in input pixels. Peaks at or above the score threshold
become detections; a greedy NMS removes duplicates. numpy + onnxruntime only (the edge never
imports torch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ModelError
from models.runtime.base import onnx_session

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
HEAT_NAME = "heat"
BOXES_NAME = "boxes"
Box = tuple[float, float, float, float]


class CylinderParams(BaseModel):
    """Manifest params of a `centernet_cylinder` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_width: int = Field(default=320, ge=32, le=2048, multiple_of=32)
    input_height: int = Field(default=192, ge=32, le=2048, multiple_of=32)
    pad_value: int = Field(default=114, ge=0, le=255, description="letterbox fill, grey level")
    score_threshold: float = Field(
        default=0.3, ge=0.01, le=0.99, description="peak probability that makes a detection"
    )
    nms_iou: float = Field(default=0.6, ge=0.05, le=0.95, description="greedy NMS overlap")
    max_detections: int = Field(default=50, ge=1, le=1000)


@dataclass(frozen=True)
class Fit:
    """How a frame was placed in the network input: input = frame * scale + offset."""

    scale: float
    offset_x: float
    offset_y: float


@dataclass(frozen=True)
class CylinderDetection:
    """One cylinder found in a frame: box x0, y0, x1, y1 in frame pixels, and the score."""

    box: Box
    score: float


def letterbox(
    image_bgr: np.ndarray, width: int, height: int, pad_value: int = 114
) -> tuple[np.ndarray, Fit]:
    """The frame scaled to fit width x height (area interpolation), centred, padded; RGB uint8."""
    h, w = image_bgr.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), pad_value, np.uint8)
    ox, oy = (width - new_w) // 2, (height - new_h) // 2
    canvas[oy : oy + new_h, ox : ox + new_w] = resized
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), Fit(scale, float(ox), float(oy))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [N,4] and [M,4] x0 y0 x1 y1 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    a64, b64 = a.astype(np.float64)[:, None, :], b.astype(np.float64)[None, :, :]
    iw = np.clip(
        np.minimum(a64[..., 2], b64[..., 2]) - np.maximum(a64[..., 0], b64[..., 0]), 0, None
    )
    ih = np.clip(
        np.minimum(a64[..., 3], b64[..., 3]) - np.maximum(a64[..., 1], b64[..., 1]), 0, None
    )
    inter = iw * ih
    area_a = (a64[..., 2] - a64[..., 0]) * (a64[..., 3] - a64[..., 1])
    area_b = (b64[..., 2] - b64[..., 0]) * (b64[..., 3] - b64[..., 1])
    return np.asarray(inter / np.maximum(area_a + area_b - inter, 1e-9))


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> list[int]:
    """Indices kept by greedy NMS, best score first, at most `limit`."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order and len(keep) < limit:
        best = order.pop(0)
        keep.append(int(best))
        if order:
            overlaps = iou_matrix(boxes[best : best + 1], boxes[order])[0]
            order = [i for i, o in zip(order, overlaps, strict=True) if o <= iou]
    return keep


def decode(
    heat: np.ndarray, boxes: np.ndarray, params: CylinderParams, min_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """One image's outputs ([1,H,W] peaks, [4,H,W] boxes) -> kept boxes [K,4] and scores [K]."""
    scores = heat[0].reshape(-1)
    picked = np.flatnonzero(scores >= min_score)
    if picked.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    cand = boxes.reshape(4, -1)[:, picked].T
    keep = greedy_nms(cand, scores[picked], params.nms_iou, params.max_detections)
    return cand[keep].astype(np.float32), scores[picked][keep].astype(np.float32)


class CylinderDetector:
    """detect(frame) -> cylinders, from the trained CenterNet-style ONNX graph."""

    def __init__(self, path: Path, params: CylinderParams, threads: int = 1) -> None:
        if not path.is_file():
            raise ModelError(f"cylinder detector {path} not found")
        self.params = params
        self._session = onnx_session(path, threads)
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        shape = inputs.get(INPUT_NAME)
        if (
            shape is None
            or list(shape[1:]) != [3, params.input_height, params.input_width]
            or {HEAT_NAME, BOXES_NAME} - outputs
        ):
            raise ModelError(
                f"{path.name}: inputs {inputs}, outputs {sorted(outputs)} do not match the "
                f"centernet_cylinder contract ({INPUT_NAME} [N,3,{params.input_height},"
                f"{params.input_width}] -> {HEAT_NAME}, {BOXES_NAME})"
            )
        self.detect(np.zeros((params.input_height, params.input_width, 3), np.uint8))  # warm up

    def raw(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's outputs (heat, boxes) for a float32 [N,3,H,W] input."""
        heat, boxes = self._session.run([HEAT_NAME, BOXES_NAME], {INPUT_NAME: tensor})
        return np.asarray(heat), np.asarray(boxes)

    def detect(
        self, image_bgr: np.ndarray, min_score: float | None = None
    ) -> list[CylinderDetection]:
        """Cylinders in a BGR frame, best first (`min_score` overrides the pack's threshold)."""
        p = self.params
        rgb, fit = letterbox(image_bgr, p.input_width, p.input_height, p.pad_value)
        tensor = rgb.transpose(2, 0, 1)[None].astype(np.float32)
        heat, boxes = self.raw(tensor)
        threshold = p.score_threshold if min_score is None else min_score
        kept, scores = decode(heat[0], boxes[0], p, threshold)
        h, w = image_bgr.shape[:2]
        found = []
        for (x0, y0, x1, y1), score in zip(kept.tolist(), scores.tolist(), strict=True):
            # Back from the letterboxed input to frame pixels, clipped to the frame.
            fx0 = min(max((x0 - fit.offset_x) / fit.scale, 0.0), float(w))
            fy0 = min(max((y0 - fit.offset_y) / fit.scale, 0.0), float(h))
            fx1 = min(max((x1 - fit.offset_x) / fit.scale, 0.0), float(w))
            fy1 = min(max((y1 - fit.offset_y) / fit.scale, 0.0), float(h))
            if fx1 > fx0 and fy1 > fy0:
                found.append(CylinderDetection((fx0, fy0, fx1, fy1), float(score)))
        return found


def build(path: Path, params: Mapping[str, Any], threads: int) -> CylinderDetector:
    """Registry factory: the manifest's params validated, then the session opened."""
    try:
        parsed = CylinderParams.model_validate(dict(params))
    except ValidationError as err:
        raise ModelError(f"{path.name}: bad centernet_cylinder params ({err})") from err
    return CylinderDetector(path, parsed, threads)
