"""Person detector for the operator areas: mediapipe's pose_detection (Apache-2.0) on ONNX Runtime.

The model comes from the mediapipe 0.10.21 wheel, converted with the project's tflite converter
(`build_pose_detection_onnx`); it is built into the model directory, never committed. It finds
people by their head and upper body, so it needs a real camera image: the simulator's stick
figures are judged by the occupancy method instead (VisionConfig.person_method).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edge_agent.station.config import VisionConfig
from models.convert.mediapipe_models import MEDIAPIPE_DIST, MEDIAPIPE_VERSION
from models.convert.tflite_to_onnx import convert_tflite
from models.convert.wheel_source import read_wheel_member
from models.runtime.blazeface import SsdAnchorOptions, generate_anchors, letterbox, weighted_nms

logger = logging.getLogger(__name__)

POSE_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
POSE_ONNX = "pose_detection.onnx"
INPUT_SIZE = 224
# From mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt (SsdAnchorsCalculator):
# 5 layers, strides 8-16-32-32-32, scales 0.1484375..0.75, fixed anchor size -> 2254 anchors.
POSE_ANCHORS = SsdAnchorOptions(
    input_height=INPUT_SIZE,
    input_width=INPUT_SIZE,
    min_scale=0.1484375,
    max_scale=0.75,
    strides=(8, 16, 32, 32, 32),
)
# TensorsToDetectionsCalculator: 12 values per anchor = box (x, y, w, h) + 4 keypoints.
NUM_COORDS = 12
NUM_KEYPOINTS = 4
SCORE_CLIPPING = 100.0


class PersonModelError(Exception):
    """The person model is missing or unusable."""


def build_pose_detection_onnx(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """Convert pose_detection.tflite from the mediapipe wheel into `model_dir`; return the path."""
    target = model_dir / POSE_ONNX
    if target.exists():
        return target
    data = read_wheel_member(MEDIAPIPE_DIST, MEDIAPIPE_VERSION, POSE_MEMBER, cache_dir)
    model = convert_tflite(data, ("image",), ("regressors", "classificators"), "pose_detection")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)
    logger.info("built %s", target)
    return target


@dataclass(frozen=True)
class PersonDetection:
    """A person found in an image: box x0, y0, x1, y1 in image pixels, and the score."""

    box: tuple[float, float, float, float]
    score: float


def load_person_detector(vision: VisionConfig) -> PoseDetector | None:
    """The pose detector the vision config asks for, or None for the occupancy method."""
    if vision.person_method != "pose":
        return None
    if vision.person_model is None:
        raise PersonModelError("vision.person_model is not set")
    return PoseDetector(vision.person_model, vision.person_score_threshold, vision.person_nms_iou)


class PoseDetector:
    """detect(image) -> people, with mediapipe's decoding and weighted NMS."""

    def __init__(self, path: Path, score_threshold: float, nms_iou: float) -> None:
        if not path.is_file():
            raise PersonModelError(
                f"person model {path} not found (build it with build_pose_detection_onnx)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception family
            raise PersonModelError(f"person model {path}: {err}") from err
        anchors = generate_anchors(POSE_ANCHORS)
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        if outputs.get("regressors") != [1, len(anchors), NUM_COORDS]:
            raise PersonModelError(
                f"person model {path}: outputs {outputs} do not match the pose_detection contract"
            )
        self._anchors = anchors
        self._threshold = score_threshold
        self._nms_iou = nms_iou
        self.detect(np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8))  # warm up once

    def detect(self, image_bgr: np.ndarray) -> list[PersonDetection]:
        """People in a BGR image."""
        tensor, fit = letterbox(image_bgr, INPUT_SIZE)
        raw, logits = self._session.run(["regressors", "classificators"], {"image": tensor})
        scores = 1.0 / (
            1.0
            + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -SCORE_CLIPPING, SCORE_CLIPPING))
        )
        keep = scores >= self._threshold
        if not keep.any():
            return []
        reg = raw[0, keep]
        anchors = self._anchors[keep]
        cx = reg[:, 0] / INPUT_SIZE * anchors[:, 2] + anchors[:, 0]
        cy = reg[:, 1] / INPUT_SIZE * anchors[:, 3] + anchors[:, 1]
        w = reg[:, 2] / INPUT_SIZE * anchors[:, 2]
        h = reg[:, 3] / INPUT_SIZE * anchors[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * INPUT_SIZE
        points = np.zeros((len(boxes), NUM_KEYPOINTS, 2), np.float32)
        people = []
        for box, score, _ in weighted_nms(
            boxes.astype(np.float32), scores[keep].astype(np.float32), points, self._nms_iou
        ):
            x0, y0, x1, y1 = (
                (box - [fit.offset_x, fit.offset_y, fit.offset_x, fit.offset_y]) / fit.scale
            ).tolist()
            people.append(PersonDetection((x0, y0, x1, y1), score))
        return people
