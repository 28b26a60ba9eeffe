"""Domain types shared by every face model wrapper."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]
"""An image as OpenCV holds it: HxWx3 BGR uint8 (grayscale is expanded before use)."""


class Task(StrEnum):
    """What a file in a model pack does."""

    DETECTOR = "detector"
    LANDMARKS = "landmarks"
    RECOGNIZER = "recognizer"
    ADAPTER = "adapter"
    LIVENESS = "liveness"
    QUALITY = "quality"
    DENSE_LANDMARKS = "dense_landmarks"
    COHORT = "cohort"
    """Embeddings of people enrolled nowhere, one per person: the cohort of score
    normalisation (models.matching.ScoreNorm)."""
    CYLINDER_DETECTOR = "cylinder_detector"
    """Finds gas cylinders in a station camera frame (station packs, models.station_pack)."""


class Metric(StrEnum):
    """How two embeddings are compared."""

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"


@dataclass(frozen=True)
class Detection:
    """One face found by a detector, in pixel coordinates of the input image."""

    box: tuple[float, float, float, float]
    """x0, y0, x1, y1."""
    score: float
    keypoints: FloatArray = field(repr=False)
    """Kx2 detector keypoints (detector-specific meaning, named by `keypoint_names`)."""
    keypoint_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Face:
    """A detected face with the 5 landmarks the aligner uses."""

    detection: Detection
    landmarks5: FloatArray = field(repr=False)
    """5x2 alignment points, in the order `landmark_scheme` names (see models.runtime.base)."""
    landmark_scheme: str = "dlib5"
