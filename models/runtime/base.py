"""The small interfaces every runtime wrapper implements, and the shared ONNX session helper."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from models.errors import ModelError
from models.types import Detection, FloatArray, Image

logger = logging.getLogger(__name__)

KeypointScheme = Literal["dlib5", "arcface5", "blazeface6", "none"]
"""dlib5: image-right eye outer and inner corner, image-left eye outer and inner corner, nose
base (see models.runtime.shape_predictor). arcface5: image-left eye centre, image-right eye
centre, nose tip, image-left mouth corner, image-right mouth corner (insightface's order)."""


@runtime_checkable
class Detector(Protocol):
    """Finds faces in a BGR image."""

    keypoint_scheme: KeypointScheme

    def detect(self, image: Image) -> list[Detection]:
        """Faces found, best first."""
        ...


@runtime_checkable
class LandmarkModel(Protocol):
    """Places alignment landmarks inside a detected face."""

    keypoint_scheme: KeypointScheme

    def landmarks(self, gray: np.ndarray, detection: Detection) -> FloatArray:
        """5x2 landmarks in pixel coordinates of `gray`."""
        ...


@runtime_checkable
class Recognizer(Protocol):
    """Turns aligned face chips into embeddings."""

    chip_size: int
    dim: int

    def embed_chips(self, chips: np.ndarray) -> FloatArray:
        """NxSxSx3 uint8 RGB chips -> NxD raw embeddings."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """A learned transform applied after the recognizer (e.g. population whitening)."""

    def transform(self, embeddings: FloatArray) -> FloatArray:
        """NxD -> NxD' embeddings."""
        ...


def onnx_session(path: Path, threads: int) -> ort.InferenceSession:
    """Open an onnxruntime CPU session; errors name the file."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelError(f"{path.name}: onnxruntime cannot load it ({err})") from err
