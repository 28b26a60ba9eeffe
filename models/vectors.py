"""Embedding vectors: unit length (what cosine scores assume) and the mirrored-chip mean."""

from __future__ import annotations

from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

FloatT = TypeVar("FloatT", np.float32, np.float64)

_MIN_NORM = 1e-12
"""Below this a vector counts as zero and stays zero (instead of dividing by zero)."""


@overload
def l2_normalize(x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


@overload
def l2_normalize(x: npt.ArrayLike, dtype: type[FloatT]) -> npt.NDArray[FloatT]: ...


def l2_normalize(x: npt.ArrayLike, dtype: type[np.floating[Any]] = np.float64) -> npt.NDArray[Any]:
    """Each vector (the last axis) scaled to unit length, computed in `dtype`."""
    m = np.asarray(x, dtype)
    return np.asarray(m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), _MIN_NORM), dtype)


def mirror_mean(raw: npt.ArrayLike, raw_mirror: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The numpy reference of the mirrored recognizer: mean of the two unit descriptors.

    training.adapt.mirror_recognizer builds the ONNX graph that computes the same.
    """
    return (l2_normalize(raw) + l2_normalize(raw_mirror)) / 2.0
