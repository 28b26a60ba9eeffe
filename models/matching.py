"""How a probe is matched against an operator's templates: the one code the gate and the
evaluations share (frame fusion, template fusion).

- frame fusion: the probe of an attempt is the renormalised mean of its frames' unit
  embeddings;
- template fusion: an operator's score is the best cosine similarity over his templates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def fuse_embeddings(embeddings: Sequence[npt.NDArray[np.floating]]) -> npt.NDArray[np.float32]:
    """Mean of L2-normalised embeddings, renormalised (multi-frame fusion)."""
    if not embeddings:
        raise ValueError("no embeddings to fuse")
    mean = np.mean(np.stack(embeddings), axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), np.float32)


def template_score(templates: npt.NDArray[np.floating], probe: npt.NDArray[np.floating]) -> float:
    """An operator's score: the best similarity of the probe over his templates (rows)."""
    if len(templates) == 0:
        raise ValueError("no templates to match against")
    return float(np.max(np.asarray(templates) @ np.asarray(probe)))
