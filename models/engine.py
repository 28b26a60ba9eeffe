"""FaceEngine: detect, check quality, align and embed faces with one model pack.

Similarity is the cosine of L2-normalised embeddings: higher means more alike, 1.0 is
identical, and a pack's calibration gives the threshold to accept a match.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.errors import ModelError
from models.manifest import (
    CalibrationBlock,
    PackManifest,
    load_calibration,
)
from models.matching import Cohort
from models.runtime.base import Adapter, Detector, LandmarkModel, Recognizer
from models.runtime.facemesh import DenseLandmarks, FaceMesh
from models.runtime.image import to_bgr, to_gray
from models.runtime.registry import build_component
from models.store import pack_manifest, verified_manifest
from models.types import Detection, Face, FloatArray, Image, Task
from models.vectors import l2_normalize

logger = logging.getLogger(__name__)

# Quality heuristics. These produce scores in [0, 1]; the thresholds that gate a frame live
# in the agent's config (quality section), never here.
SHARPNESS_REF_WIDTH = 64
"""Faces are resized to this width before the Laplacian, so sharpness does not grow with size."""
SHARPNESS_HALF_VARIANCE = 60.0
"""Laplacian variance at which the sharpness score is 0.5 (a slightly soft webcam face)."""
NEUTRAL_NOSE_DROP = {"dlib5": 0.55, "arcface5": 0.45}
"""Frontal-face vertical distance eye line -> nose point, in inter-ocular distances."""


PAD_FRACTION = 0.5
"""Border added on each side (fraction of the longer side) before retrying detection on a
tight crop: detectors trained on scenes miss faces that fill the whole frame."""


@dataclass(frozen=True)
class Acquired:
    """A face taken from an image, and how it was found."""

    face: Face
    method: str
    """"detected", "padded" (found after adding a border) or "whole_crop" (no detection: the
    landmark model was run on the whole image as the face box)."""
    image: Image
    """The image the face's coordinates refer to (the padded one for "padded")."""


@dataclass(frozen=True)
class QualityScores:
    """How usable a face is for matching."""

    face_px: float
    """Shorter side of the detection box, pixels."""
    sharpness: float
    """0 = blurred, 1 = sharp."""
    yaw_deg: float
    pitch_deg: float
    exposure: float
    """0 = black or blown out, 1 = well exposed."""


def _keypoints_for(face: Face) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-eye centre, left-eye centre and nose point from dlib5 or arcface5 landmarks."""
    pts = face.landmarks5
    if face.landmark_scheme == "dlib5":
        return (pts[0] + pts[1]) / 2, (pts[2] + pts[3]) / 2, pts[4]
    return pts[0], pts[1], pts[2]


class FaceEngine:
    """Every face operation of one model pack, run through onnxruntime."""

    def __init__(self, pack_dir: Path, threads: int = 2, verify: bool = True) -> None:
        self.pack_dir = pack_dir
        self.manifest: PackManifest = (
            verified_manifest(pack_dir) if verify else pack_manifest(pack_dir)
        )
        self.calibration: CalibrationBlock = load_calibration(pack_dir)
        files = {f.task: f for f in self.manifest.files}
        self.detector: Detector = build_component(pack_dir, files[Task.DETECTOR], threads, Detector)
        self.recognizer: Recognizer = build_component(
            pack_dir, files[Task.RECOGNIZER], threads, Recognizer
        )
        self.landmarker: LandmarkModel | None = (
            build_component(pack_dir, files[Task.LANDMARKS], threads, LandmarkModel)
            if Task.LANDMARKS in files
            else None
        )
        self.dense: FaceMesh | None = (
            build_component(pack_dir, files[Task.DENSE_LANDMARKS], threads, FaceMesh)
            if Task.DENSE_LANDMARKS in files
            and (pack_dir / files[Task.DENSE_LANDMARKS].path).is_file()
            else None
        )
        self.adapter: Adapter | None = (
            build_component(pack_dir, files[Task.ADAPTER], threads, Adapter)
            if Task.ADAPTER in files
            else None
        )
        spec = self.manifest.embedding
        self.cohort: Cohort | None = (
            build_component(pack_dir, files[Task.COHORT], threads, Cohort)
            if Task.COHORT in files
            else None
        )
        if self.cohort is not None and self.cohort.embeddings.shape[1] != spec.dim:
            raise ModelError(
                f"{self.manifest.name}: cohort rows are {self.cohort.embeddings.shape[1]}-d, "
                f"the pack makes {spec.dim}-d embeddings"
            )
        needed = "dlib5" if spec.alignment == "dlib_chip" else "arcface5"
        source = (
            self.landmarker.keypoint_scheme if self.landmarker else self.detector.keypoint_scheme
        )
        if source != needed:
            raise ModelError(
                f"{self.manifest.name}: alignment {spec.alignment} needs {needed} landmarks, "
                f"but the pack provides {source}"
            )
        if self.recognizer.chip_size != spec.chip_size:
            raise ModelError(
                f"{self.manifest.name}: recognizer takes {self.recognizer.chip_size} px chips, "
                f"the manifest says {spec.chip_size}"
            )
        self.scheme = needed
        logger.info(
            "face engine ready: pack %s %s (contract %s)",
            self.manifest.name,
            self.manifest.version,
            self.manifest.contract_id,
        )

    @property
    def contract_id(self) -> str:
        """The embedding contract id of the loaded pack."""
        return self.manifest.contract_id

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces with box, landmarks and detection score, best first."""
        bgr = to_bgr(image)
        detections = self.detector.detect(bgr)
        if not detections:
            return []
        gray = to_gray(bgr) if self.landmarker else None
        return [self._face(bgr, det, gray) for det in detections]

    def face_from_box(self, image: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        """A face whose box is known (e.g. a tight crop): landmarks are placed inside it."""
        if self.landmarker is None:
            raise ModelError(
                f"{self.manifest.name}: has no landmark model to place points in a box"
            )
        det = Detection(box, 0.0, np.zeros((0, 2), np.float32))
        return self._face(to_bgr(image), det, to_gray(image))

    def acquire(self, image: np.ndarray, whole_crop: bool = True) -> Acquired | None:
        """The largest face of a photo: detected, else detected after padding, else the crop.

        Certificate photos and evaluation sets are often tight crops; padding and the
        whole-crop fallback handle them. `None` when nothing worked.
        """
        bgr = to_bgr(image)
        faces = self.detect(bgr)
        if faces:
            return Acquired(_largest(faces), "detected", bgr)
        pad = int(round(PAD_FRACTION * max(bgr.shape[:2])))
        padded = np.asarray(
            cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE), np.uint8
        )
        faces = self.detect(padded)
        if faces:
            return Acquired(_largest(faces), "padded", padded)
        if whole_crop and self.landmarker is not None:
            h, w = bgr.shape[:2]
            return Acquired(
                self.face_from_box(bgr, (0.0, 0.0, float(w), float(h))), "whole_crop", bgr
            )
        return None

    def _face(self, bgr: Image, det: Detection, gray: np.ndarray | None) -> Face:
        if self.landmarker is not None:
            assert gray is not None  # set whenever a landmarker exists
            points = self.landmarker.landmarks(gray, det)
        else:
            points = det.keypoints
        return Face(det, np.asarray(points, np.float32), self.scheme)

    def dense_landmarks(self, image: np.ndarray, face: Face) -> DenseLandmarks:
        """468 FaceMesh points of a face; ModelError when the pack has no FaceMesh."""
        if self.dense is None:
            raise ModelError(f"{self.manifest.name}: has no dense landmark model (FaceMesh)")
        return self.dense.landmarks(image, face.detection)

    def align(self, image: np.ndarray, face: Face) -> Image:
        """The aligned RGB chip the recognizer was trained on."""
        from models.runtime.align import arcface_chip, dlib_chip

        bgr = to_bgr(image)
        spec = self.manifest.embedding
        if spec.alignment == "dlib_chip":
            # The chip is cut from the BGR frame and only its 150x150 pixels change order:
            # converting the whole frame first costs more than the cut itself.
            chip = dlib_chip(bgr, face.landmarks5, size=spec.chip_size, padding=spec.chip_padding)
            return np.ascontiguousarray(chip[:, :, ::-1], np.uint8)
        chip = arcface_chip(bgr, face.landmarks5, spec.chip_size)
        return np.asarray(cv2.cvtColor(chip, cv2.COLOR_BGR2RGB), np.uint8)

    def embed_chips(self, chips: np.ndarray) -> FloatArray:
        """RGB chips -> L2-normalised embeddings (adapter applied when the pack has one)."""
        raw = self.recognizer.embed_chips(chips)
        if self.adapter is not None:
            raw = self.adapter.transform(raw)
        return l2_normalize(raw, np.float32)

    def embed(self, image: np.ndarray, face: Face) -> FloatArray:
        """One face -> its L2-normalised embedding."""
        return np.asarray(self.embed_chips(self.align(image, face)[None])[0], np.float32)

    @staticmethod
    def compare(a: FloatArray, b: FloatArray) -> float:
        """Cosine similarity of two normalised embeddings; higher means more alike."""
        return float(np.dot(a, b))

    def quality(self, image: np.ndarray, face: Face) -> QualityScores:
        """Size, sharpness, pose and exposure of a face."""
        gray = to_gray(image)
        x0, y0, x1, y1 = face.detection.box
        h, w = gray.shape
        xa, ya = max(0, int(x0)), max(0, int(y0))
        xb, yb = min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))
        crop = gray[ya:yb, xa:xb]
        face_px = float(min(x1 - x0, y1 - y0))
        if crop.size < 16:
            return QualityScores(face_px, 0.0, 90.0, 90.0, 0.0)
        scale = SHARPNESS_REF_WIDTH / crop.shape[1]
        small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        variance = float(cv2.Laplacian(small, cv2.CV_64F).var())
        sharpness = variance / (variance + SHARPNESS_HALF_VARIANCE)
        clipped = float(np.mean((crop <= 5) | (crop >= 250)))
        exposure = max(0.0, 1.0 - abs(float(crop.mean()) - 128.0) / 128.0) * (1.0 - clipped)
        right_eye, left_eye, nose = _keypoints_for(face)
        eye_mid = (right_eye + left_eye) / 2
        iod = float(np.linalg.norm(left_eye - right_eye)) or 1.0
        # The nose point shifts sideways by about sin(yaw) of the head's half width
        # (~ one inter-ocular distance), and up or down with pitch.
        yaw = math.degrees(math.asin(max(-1.0, min(1.0, float(nose[0] - eye_mid[0]) / iod))))
        drop = float(nose[1] - eye_mid[1]) / iod - NEUTRAL_NOSE_DROP[face.landmark_scheme]
        pitch = math.degrees(math.asin(max(-1.0, min(1.0, drop))))
        return QualityScores(face_px, sharpness, yaw, pitch, exposure)


def _largest(faces: list[Face]) -> Face:
    def area(face: Face) -> float:
        x0, y0, x1, y1 = face.detection.box
        return (x1 - x0) * (y1 - y0)

    return max(faces, key=area)
