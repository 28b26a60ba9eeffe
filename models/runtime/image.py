"""Image helpers shared by the wrappers: every wrapper takes BGR uint8 as OpenCV reads it."""

from __future__ import annotations

import cv2
import numpy as np

from models.errors import ModelError
from models.types import Image


def to_bgr(image: np.ndarray) -> Image:
    """Grayscale, BGRA or BGR uint8 image -> HxWx3 BGR uint8."""
    if image.dtype != np.uint8:
        raise ModelError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR), np.uint8)
    raise ModelError(f"unsupported image shape {image.shape}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR or grayscale uint8 image -> HxW grayscale uint8."""
    return image if image.ndim == 2 else cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)


def read_image(path: str) -> Image:
    """Read an image file (any format OpenCV knows, incl. PGM and BMP) as BGR uint8."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({err})") from err
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ModelError(f"{path}: not a readable image")
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    return to_bgr(image)
