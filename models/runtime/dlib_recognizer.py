"""ONNX Runtime wrapper for dlib's ResNet v1 face recognizer (128-d descriptors)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.errors import ModelError

logger = logging.getLogger(__name__)

INPUT_NAME = "chip"
OUTPUT_NAME = "descriptor"
CHIP_SIZE = 150
EMBEDDING_DIM = 128


class DlibResNetRecognizer:
    """Turns aligned 150x150 RGB face chips into dlib's raw 128-d descriptors."""

    chip_size = CHIP_SIZE
    dim = EMBEDDING_DIM

    def __init__(self, path: Path, threads: int = 2) -> None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        if not path.is_file():
            raise ModelError(f"recognizer model not found: {path}")
        self.path = path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # One request at a time on the edge: inter-op parallelism only adds threads.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Exception subclasses
            raise ModelError(f"cannot load recognizer {path}: {err}") from err
        self._check_signature()
        # Warm up so the first real verification is not slowed by lazy allocation.
        self.embed_chips(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8))
        logger.info("loaded dlib recognizer %s with %d intra-op threads", path, threads)

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in {o.name for o in outputs}:
            raise ModelError(
                f"{self.path} is not a dlib recognizer graph: inputs "
                f"{[i.name for i in inputs]}, outputs {[o.name for o in outputs]}"
            )
        shape = list(inputs[0].shape)
        if shape[1:] != [3, CHIP_SIZE, CHIP_SIZE]:
            raise ModelError(f"{self.path}: input shape {shape}, expected [N, 3, 150, 150]")

    @property
    def embedding_dim(self) -> int:
        """Length of one descriptor."""
        return EMBEDDING_DIM

    def embed_chips(self, chips: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Descriptors [N,128] float32 for uint8 RGB chips [N,150,150,3]."""
        if not isinstance(chips, np.ndarray):
            raise ModelError(f"chips must be a numpy array, got {type(chips).__name__}")
        if chips.dtype != np.uint8:
            # A float image could be 0..1 or 0..255; guessing would silently skew distances.
            raise ModelError(f"chips must be uint8, got {chips.dtype}")
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ModelError(f"chips must be [N, 150, 150, 3] RGB, got {list(chips.shape)}")
        if chips.shape[0] == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        batch = np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)
        try:
            (descriptors,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        except Exception as err:  # onnxruntime raises its own Exception subclasses
            raise ModelError(f"recognizer inference failed: {err}") from err
        result = np.asarray(descriptors, dtype=np.float32)
        if result.shape != (chips.shape[0], EMBEDDING_DIM):
            raise ModelError(f"recognizer returned shape {list(result.shape)}")
        if not np.isfinite(result).all():
            # Fail closed: a NaN descriptor must never reach a gallery comparison.
            raise ModelError("recognizer returned non-finite values")
        return result


def build(path: Path, params: Mapping[str, Any], threads: int) -> DlibResNetRecognizer:
    """Factory used by the wrapper registry (the dlib recognizer takes no options)."""
    return DlibResNetRecognizer(path, threads=threads)
