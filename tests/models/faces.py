"""Real face photos that ship with scikit-image, and variants of them, for tests without data.

Two people: the astronaut (Eileen Collins, colour) and the cameraman (grayscale). Variants
change scale, brightness and angle slightly, as successive camera frames would.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def astronaut() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def cameraman() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)


def variants(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    rotate = cv2.getRotationMatrix2D((w / 2, h / 2), 4.0, 1.0)
    return [
        image,
        cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA),
        cv2.convertScaleAbs(image, alpha=1.0, beta=25),
        cv2.warpAffine(image, rotate, (w, h), borderMode=cv2.BORDER_REPLICATE),
    ]


def write_set(root: Path) -> Path:
    """A labelled set `root/<person>/<n>.png` with four variants of each person."""
    for name, image in (("astronaut", astronaut()), ("cameraman", cameraman())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, variant in enumerate(variants(image)):
            cv2.imwrite(str(folder / f"{i}.png"), variant)
    return root
