"""Loader for a pack's distractor cohort (task `cohort`, wrapper `as_norm_cohort`).

The file is a NumPy `.npz` written by `jifang train adapter`: `embeddings` [N, dim] float32
unit rows (faces of people enrolled nowhere, one per person, embedded by the pack itself)
and `identities` [N] (`models.matching.identity_key` of each row's person). Params: `top`,
the number of highest cohort cosines AS-norm averages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ModelError
from models.manifest import sha256_file
from models.matching import DEFAULT_TOP, Cohort

logger = logging.getLogger(__name__)

UNIT_TOLERANCE = 1e-3
"""How far a row's norm may be from 1."""


def load_cohort(path: Path, top: int = DEFAULT_TOP) -> Cohort:
    """Read and check a cohort file; ModelError naming the file when it is not one."""
    if not path.is_file():
        raise ModelError(f"cohort file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            embeddings = np.asarray(data["embeddings"], np.float32)
            identities = tuple(str(v) for v in data["identities"])
    except (OSError, KeyError, ValueError) as err:
        raise ModelError(f"{path.name}: not a cohort file ({err})") from err
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ModelError(
            f"{path.name}: embeddings of shape {list(embeddings.shape)}, need [N, dim]"
        )
    if not np.all(np.isfinite(embeddings)):
        raise ModelError(f"{path.name}: embeddings hold non-finite values")
    norms = np.linalg.norm(embeddings, axis=1)
    if np.any(np.abs(norms - 1.0) > UNIT_TOLERANCE):
        raise ModelError(f"{path.name}: embeddings are not unit rows")
    try:
        cohort = Cohort(embeddings, identities, sha256_file(path), top)
        cohort.norm()  # too few rows for `top` is an error now, not at the first start
    except ValueError as err:
        raise ModelError(f"{path.name}: {err}") from err
    logger.info("loaded cohort %s (%d faces, top %d)", path.name, len(embeddings), top)
    return cohort


def build(path: Path, params: Mapping[str, Any], threads: int) -> Cohort:
    """Factory used by the wrapper registry (threads unused: a cohort is numbers)."""
    unknown = set(params) - {"top"}
    if unknown:
        raise ModelError(f"{path.name}: unknown cohort params {sorted(unknown)}")
    top = params.get("top", DEFAULT_TOP)
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ModelError(f"{path.name}: cohort param 'top' must be a positive integer, got {top!r}")
    return load_cohort(path, top)
