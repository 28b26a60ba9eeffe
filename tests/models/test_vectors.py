"""Unit-length embeddings and the mirrored-chip mean, computed one way everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from models.vectors import l2_normalize, mirror_mean


def test_rows_get_unit_length_and_zero_rows_stay_zero() -> None:
    x = np.asarray([[3.0, 4.0], [0.0, 0.0]], np.float32)
    unit = l2_normalize(x)
    assert unit.dtype == np.float64
    assert unit.tolist() == [[0.6, 0.8], [0.0, 0.0]]
    assert l2_normalize(x, np.float32).dtype == np.float32
    assert l2_normalize([0.0, 2.0]).tolist() == [0.0, 1.0]  # one vector


def test_mirror_mean_averages_the_unit_descriptors() -> None:
    got = mirror_mean([[2.0, 0.0]], [[0.0, 5.0]])
    assert got.shape == (1, 2) and got[0].tolist() == pytest.approx([0.5, 0.5])
