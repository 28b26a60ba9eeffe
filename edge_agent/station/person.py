"""Person check for the operator areas: mediapipe's pose models (Apache-2.0) on ONNX Runtime.

Two stages, as mediapipe's own pose pipeline runs them, plus a body-shape check between:

1. `PoseDetector` (pose_detection) proposes people: a face box and four alignment keypoints
   (hip centre, a point on the full-body circle, shoulder centre, a point on the upper-body
   circle);
2. `implausibility` refuses proposals whose hip-to-shoulder direction is not a standing body
   (tilted over, sideways, upside down): on plant frames most proposals on cylinder domes and
   valves point that way;
3. `PoseLandmarker` (pose_landmark_full) crops the body the keypoints describe from the whole
   frame and scores it with its pose-presence flag, which mediapipe uses to drop tracked poses
   that are not people.

`PosePersonCheck` chains them; the zone analyser adds the size against the operator area and
persistence over checks (edge_agent.station.vision). The models come from the mediapipe 0.10.21
wheel, converted with the project's tflite converter into the model directory, never committed.
They need a real camera image: the simulator's stick figures are judged by the occupancy method
instead (VisionConfig.person_method).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from edge_agent.station.config import VisionConfig
from models.convert.mediapipe_models import MEDIAPIPE_MODELS, build_mediapipe_onnx
from models.runtime.blazeface import SsdAnchorOptions, generate_anchors, letterbox, weighted_nms

logger = logging.getLogger(__name__)

POSE_ONNX = "pose_detection.onnx"
LANDMARK_ONNX = "pose_landmark_full.onnx"
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
# TensorsToDetectionsCalculator: 12 values per anchor = box (x, y, w, h) + 4 keypoints (x, y).
NUM_COORDS = 12
NUM_KEYPOINTS = 4
SCORE_CLIPPING = 100.0

LANDMARK_SIZE = 256
# From mediapipe/modules/pose_landmark/pose_detection_to_roi.pbtxt: the body crop is centred on
# the hip keypoint, its side is twice the hip-to-full-body-point distance scaled by 1.25, and it
# is turned so that this point lies straight up (90 degrees).
ROI_SCALE = 1.25
ROI_TARGET_ANGLE = math.pi / 2


class PersonModelError(Exception):
    """The person model is missing or unusable."""


def _build(key: str, name: str, model_dir: Path, cache_dir: Path | None) -> Path:
    target = model_dir / name
    if target.exists():
        return target
    model = build_mediapipe_onnx(key, cache_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)
    logger.info("built %s", target)
    return target


def build_pose_detection_onnx(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """Convert pose_detection.tflite from the mediapipe wheel into `model_dir`; return the path."""
    return _build("pose_detection", POSE_ONNX, model_dir, cache_dir)


def build_pose_landmark_onnx(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """Convert pose_landmark_full.tflite from the mediapipe wheel into `model_dir`; return it."""
    return _build("pose_landmark_full", LANDMARK_ONNX, model_dir, cache_dir)


Point = tuple[float, float]


@dataclass(frozen=True)
class PersonDetection:
    """A person proposal in image pixels: face box x0, y0, x1, y1, score, alignment keypoints."""

    box: tuple[float, float, float, float]
    score: float
    hip: Point
    body_point: Point  # on the circle around the hip that holds the whole body
    shoulder: Point
    upper_point: Point  # on the circle around the shoulders that holds the upper body

    @property
    def torso_length(self) -> float:
        """Shoulder centre to hip centre, in pixels."""
        return math.dist(self.shoulder, self.hip)

    def shifted(self, dx: float, dy: float) -> PersonDetection:
        """The same detection with every coordinate moved by (dx, dy)."""

        def move(point: Point) -> Point:
            return (point[0] + dx, point[1] + dy)

        x0, y0, x1, y1 = self.box
        return PersonDetection(
            (x0 + dx, y0 + dy, x1 + dx, y1 + dy),
            self.score,
            move(self.hip),
            move(self.body_point),
            move(self.shoulder),
            move(self.upper_point),
        )


def body_tilt(person: PersonDetection) -> float:
    """Degrees between the hip-to-shoulder direction and image up (0 upright, 180 upside down)."""
    axis_x = person.shoulder[0] - person.hip[0]
    axis_y = person.shoulder[1] - person.hip[1]
    torso = math.hypot(axis_x, axis_y)
    if torso < 1e-6:
        return 180.0  # no torso at all: not a body
    # Image y grows downwards, so "up" is (0, -1).
    return math.degrees(math.acos(max(-1.0, min(1.0, -axis_y / torso))))


def implausibility(person: PersonDetection, vision: VisionConfig) -> str | None:
    """Why this proposal's keypoints are not a standing person (None when they are).

    Only the body's direction is judged. The other keypoint ratios carry no information here:
    the face box never gets smaller than a fifth of the detector input (about 45 of 224 px), so
    at station scale it measures the operator area, not the face; and the keypoints keep
    human proportions to each other whatever the detector fired on (a valve or a dome included).
    """
    tilt = body_tilt(person)
    if tilt > vision.person_max_tilt_deg:
        return f"body tilted {tilt:.0f} deg > {vision.person_max_tilt_deg:g}"
    return None


def _session(path: Path, what: str) -> ort.InferenceSession:
    if not path.is_file():
        raise PersonModelError(f"{what} {path} not found (build it with build_{what}_onnx)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception family
        raise PersonModelError(f"{what} {path}: {err}") from err


def _check_contract(session: ort.InferenceSession, path: Path, key: str, shape: list[int]) -> None:
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected = MEDIAPIPE_MODELS[key].output_names
    if tuple(outputs) != expected or outputs[expected[0]] != shape:
        raise PersonModelError(
            f"person model {path}: outputs {outputs} do not match the {key} contract"
        )


class PoseDetector:
    """detect(image) -> person proposals, with mediapipe's decoding and weighted NMS."""

    def __init__(self, path: Path, score_threshold: float, nms_iou: float) -> None:
        self._session = _session(path, "pose_detection")
        anchors = generate_anchors(POSE_ANCHORS)
        _check_contract(self._session, path, "pose_detection", [1, len(anchors), NUM_COORDS])
        self._anchors = anchors
        self._threshold = score_threshold
        self._nms_iou = nms_iou
        self.detect(np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8))  # warm up once

    def detect(self, image_bgr: np.ndarray) -> list[PersonDetection]:
        """Person proposals in a BGR image."""
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
        # Keypoints are offsets from the anchor centre, scaled like the box centre.
        points = (
            np.stack(
                [
                    reg[:, 4::2] / INPUT_SIZE * anchors[:, 2:3] + anchors[:, 0:1],
                    reg[:, 5::2] / INPUT_SIZE * anchors[:, 3:4] + anchors[:, 1:2],
                ],
                axis=-1,
            )
            * INPUT_SIZE
        )
        offset = np.array([fit.offset_x, fit.offset_y], np.float32)
        people = []
        for box, score, keypoints in weighted_nms(
            boxes.astype(np.float32),
            scores[keep].astype(np.float32),
            points.astype(np.float32),
            self._nms_iou,
        ):
            x0, y0, x1, y1 = ((box - np.tile(offset, 2)) / fit.scale).tolist()
            hip, body, shoulder, upper = (
                (float(x), float(y)) for x, y in ((keypoints - offset) / fit.scale).tolist()
            )
            people.append(PersonDetection((x0, y0, x1, y1), score, hip, body, shoulder, upper))
        return people


def body_crop(person: PersonDetection) -> tuple[Point, float, float]:
    """The rotated square the landmark model reads: centre, side in pixels, rotation (radians)."""
    dx = person.body_point[0] - person.hip[0]
    dy = person.body_point[1] - person.hip[1]
    side = 2.0 * math.hypot(dx, dy) * ROI_SCALE
    rotation = ROI_TARGET_ANGLE - math.atan2(-dy, dx)
    rotation = (rotation + math.pi) % (2.0 * math.pi) - math.pi
    return person.hip, side, rotation


class PoseLandmarker:
    """presence(image, proposal) -> mediapipe's pose-presence score of the body the proposal outlines."""

    def __init__(self, path: Path) -> None:
        self._session = _session(path, "pose_landmark")
        _check_contract(self._session, path, "pose_landmark_full", [1, 195])
        self._session.run(
            ["pose_flag"], {"image": np.zeros((1, 3, LANDMARK_SIZE, LANDMARK_SIZE), np.float32)}
        )  # warm up once

    def presence(self, image_bgr: np.ndarray, person: PersonDetection) -> float:
        """The pose flag (0..1) on the rotated body crop; areas outside the image are black."""
        (cx, cy), side, rotation = body_crop(person)
        if side < 1.0:
            return 0.0
        k = side / LANDMARK_SIZE
        cos, sin = math.cos(rotation) * k, math.sin(rotation) * k
        half = LANDMARK_SIZE / 2.0
        # Crop pixel (u, v) comes from image centre + R(rotation) * ((u, v) - half) * k.
        to_image = np.array(
            [
                [cos, -sin, cx - cos * half + sin * half],
                [sin, cos, cy - sin * half - cos * half],
            ],
            np.float64,
        )
        crop = cv2.warpAffine(
            image_bgr,
            to_image,
            (LANDMARK_SIZE, LANDMARK_SIZE),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        # The landmark model reads RGB in [0, 1] (pose_landmark_by_roi_cpu.pbtxt).
        tensor = (crop[:, :, ::-1].astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        (flag,) = self._session.run(["pose_flag"], {"image": np.ascontiguousarray(tensor)})
        return float(flag.reshape(-1)[0])


class PosePersonCheck:
    """detect(frame, region) -> the proposals that stand upright and are confirmed as people."""

    def __init__(
        self, detector: PoseDetector, landmarker: PoseLandmarker, vision: VisionConfig
    ) -> None:
        self._detector = detector
        self._landmarker = landmarker
        self._vision = vision

    def detect(
        self, frame_bgr: np.ndarray, region: tuple[int, int, int, int]
    ) -> list[PersonDetection]:
        """People proposed inside `region` (x0, y0, x1, y1) of the frame, in frame pixels.

        The detector sees only the region; the landmark model reads the body from the whole
        frame, as mediapipe runs it: a body crop padded with black where the region ends looks
        more like a person than what the camera saw there.
        """
        x0, y0, x1, y1 = region
        people = []
        for found in self._detector.detect(frame_bgr[y0:y1, x0:x1]):
            person = found.shifted(x0, y0)
            reason = implausibility(person, self._vision)
            if reason is not None:
                logger.debug("person proposal refused: %s", reason)
                continue
            presence = self._landmarker.presence(frame_bgr, person)
            if presence < self._vision.person_presence_threshold:
                logger.debug("person proposal refused: pose presence %.3f", presence)
                continue
            people.append(person)
        return people


def load_person_detector(vision: VisionConfig) -> PosePersonCheck | None:
    """The pose person check the vision config asks for, or None for the occupancy method."""
    if vision.person_method != "pose":
        return None
    if vision.person_model is None or vision.person_landmark_model is None:
        raise PersonModelError("vision.person_model and vision.person_landmark_model must be set")
    detector = PoseDetector(
        vision.person_model, vision.person_score_threshold, vision.person_nms_iou
    )
    return PosePersonCheck(detector, PoseLandmarker(vision.person_landmark_model), vision)
