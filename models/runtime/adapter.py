"""ONNX Runtime wrapper for a linear embedding adapter applied after the recognizer.

The graph (written by training.adapt) takes the recognizer's raw embeddings as `embedding`
[N, input_dim] and returns `adapted` [N, output_dim]: the input is L2-normalised, then one
MatMul and one Add (a population whitening learned on the site's data). The engine
L2-normalises the result, so cosine similarity applies unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import ModelError
from models.runtime.base import onnx_session

logger = logging.getLogger(__name__)

INPUT_NAME = "embedding"
OUTPUT_NAME = "adapted"
MAX_DIM = 4096
"""The embedding spec's own bound on a dimension."""


def _dim(params: Mapping[str, Any], key: str, path: Path) -> int:
    value = params.get(key)
    # bool is an int subclass; `true` in a manifest is a mistake, not dimension 1.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
        raise ModelError(
            f"{path.name}: adapter param {key!r} must be an integer in 1..{MAX_DIM}, got {value!r}"
        )
    return value


class LinearAdapter:
    """Maps raw recognizer embeddings to adapted ones with a small ONNX graph."""

    def __init__(self, path: Path, input_dim: int, output_dim: int, threads: int = 1) -> None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        if not path.is_file():
            raise ModelError(f"adapter model not found: {path}")
        self.path = path
        self.input_dim = input_dim
        self.dim = output_dim
        self._session = onnx_session(path, threads)
        self._check_signature()
        # Warm up once so the first verification does not pay for lazy allocation.
        self.transform(np.ones((1, input_dim), np.float32))
        logger.info("loaded adapter %s (%d -> %d)", path.name, input_dim, output_dim)

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ModelError(
                f"{self.path.name} is not an adapter graph: inputs {[i.name for i in inputs]}, "
                f"outputs {[o.name for o in outputs]} (expected {INPUT_NAME} -> {OUTPUT_NAME})"
            )
        in_shape = list(inputs[0].shape)
        out_shape = list(outputs[0].shape)
        if len(in_shape) != 2 or in_shape[1] != self.input_dim:
            raise ModelError(
                f"{self.path.name}: input shape {in_shape}, manifest says [N, {self.input_dim}]"
            )
        if len(out_shape) != 2 or out_shape[1] != self.dim:
            raise ModelError(
                f"{self.path.name}: output shape {out_shape}, manifest says [N, {self.dim}]"
            )

    def transform(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Raw [N, input_dim] embeddings -> adapted [N, output_dim] (not yet normalised)."""
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
            raise ModelError("adapter input must be a 2-D numpy array")
        if embeddings.shape[1] != self.input_dim:
            raise ModelError(
                f"adapter takes {self.input_dim}-d embeddings, got {embeddings.shape[1]}-d"
            )
        if embeddings.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = np.ascontiguousarray(embeddings, dtype=np.float32)
        try:
            (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        except Exception as err:  # onnxruntime raises its own Exception subclasses
            raise ModelError(f"{self.path.name}: adapter inference failed: {err}") from err
        result = np.asarray(out, np.float32)
        if result.shape != (embeddings.shape[0], self.dim):
            raise ModelError(f"{self.path.name}: adapter returned shape {list(result.shape)}")
        if not np.isfinite(result).all():
            # Fail closed: a NaN embedding must never reach a gallery comparison.
            raise ModelError(f"{self.path.name}: adapter returned non-finite values")
        return result


def build(path: Path, params: Mapping[str, Any], threads: int) -> LinearAdapter:
    """Factory used by the wrapper registry: params name the input and output dimensions."""
    unknown = set(params) - {"input_dim", "output_dim", "method"}
    if unknown:
        raise ModelError(f"{path.name}: unknown adapter params {sorted(unknown)}")
    return LinearAdapter(
        path, _dim(params, "input_dim", path), _dim(params, "output_dim", path), threads=threads
    )
