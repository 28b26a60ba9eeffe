"""dlib's face-chip alignment (`get_face_chip_details` + `extract_image_chip`), in numpy.

The recognizer (dlib ResNet v1) was trained on chips cut exactly this way, so the framing,
the half-pixel conventions and the down-sampling pyramid all matter for its accuracy.

Landmarks are in dlib's 5-point order (see models.runtime.shape_predictor): image-right
eye outer/inner corner, image-left eye outer/inner corner, nose base.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.runtime.shape_predictor import similarity_matrix

logger = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Rect = tuple[float, float, float, float]
"""left, top, right, bottom as dlib's drectangle holds them (width = right - left + 1)."""

TEMPLATE5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
"""dlib's mean face for 5-point shapes, on the unit square before padding."""


@dataclass(frozen=True)
class ChipDetails:
    """Where a chip lies in the image: dlib's `chip_details` (rect before rotation, angle)."""

    rect: Rect
    angle: float
    rows: int
    cols: int


def face_chip_details(
    landmarks5: npt.ArrayLike, size: int = 150, padding: float = 0.25
) -> ChipDetails:
    """Chip placement for a 5-point shape, as dlib's `get_face_chip_details` computes it."""
    points = np.asarray(landmarks5, np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise ValueError(f"expected 5x2 finite landmarks, got shape {points.shape}")
    if size <= 0 or padding < 0:
        raise ValueError(f"size must be > 0 and padding >= 0, got {size}, {padding}")
    chip_points = (padding + TEMPLATE5) / (2 * padding + 1) * size
    # Similarity transform chip -> image; its scale and rotation become the rect and angle.
    m = similarity_matrix(chip_points, points)
    t = points.mean(axis=0) - m @ chip_points.mean(axis=0)
    angle = math.atan2(m[1, 0], m[0, 0])
    scale = math.hypot(m[0, 0], m[1, 0])
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    # dlib's centred rectangle counts both edge pixels: width = right - left + 1.
    half = (size * scale - 1.0) / 2.0
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


def _rect_down(rect: Rect) -> Rect:
    # dlib's pyramid_down<2> maps points with p/2 - (1.25, 0.75); kept as is for parity.
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _area(rect: Rect) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotated_corners(rect: Rect, angle: float) -> npt.NDArray[np.float64]:
    """Corners tl, tr, bl, br of `rect` rotated by `angle` about its centre."""
    left, top, right, bottom = rect
    corners = np.array([[left, top], [right, top], [left, bottom], [right, bottom]])
    centre = np.array([(left + right) / 2, (top + bottom) / 2])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    out: npt.NDArray[np.float64] = (corners - centre) @ rot.T + centre
    return out


def pyramid_down2(image: Image) -> Image:
    """One level of dlib's pyramid_down<2>: 5-tap [1 4 6 4 1] filter, keep every other pixel."""
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, *image.shape[2:]), np.uint8)
    a = image.astype(np.int32)
    n = (cols - 3) // 2
    horiz = (
        a[:, 0 : 2 * n : 2]
        + 4 * a[:, 1 : 2 * n + 1 : 2]
        + 6 * a[:, 2 : 2 * n + 2 : 2]
        + 4 * a[:, 3 : 2 * n + 3 : 2]
        + a[:, 4 : 2 * n + 4 : 2]
    )
    m = (rows - 3) // 2
    both = (
        horiz[0 : 2 * m : 2]
        + 4 * horiz[1 : 2 * m + 1 : 2]
        + 6 * horiz[2 : 2 * m + 2 : 2]
        + 4 * horiz[3 : 2 * m + 3 : 2]
        + horiz[4 : 2 * m + 4 : 2]
    )
    # dlib divides the 256-weight sum with integer (truncating) division.
    return np.asarray(both // 256, np.uint8)


def _bilinear(image: Image, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64]) -> Image:
    """Sample `image` at (xs, ys) like dlib's interpolate_bilinear; 0 where a tap is outside."""
    out_shape = (*xs.shape, *image.shape[2:])
    out = np.zeros(out_shape, np.uint8)
    rows, cols = image.shape[:2]
    left = np.floor(xs)
    top = np.floor(ys)
    # dlib needs all four taps inside; it does not clamp or blend with the border.
    ok = (left >= 0) & (top >= 0) & (left + 1 < cols) & (top + 1 < rows)
    if not ok.any():
        return out
    li = left[ok].astype(np.intp)
    ti = top[ok].astype(np.intp)
    lr = xs[ok] - left[ok]
    tb = ys[ok] - top[ok]
    if image.ndim == 3:
        lr = lr[:, None]
        tb = tb[:, None]
    img = image.astype(np.float64)
    tl = img[ti, li]
    tr = img[ti, li + 1]
    bl = img[ti + 1, li]
    br = img[ti + 1, li + 1]
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    # dlib assigns a double to an 8-bit pixel by clamping then truncating.
    out[ok] = np.clip(value, 0, 255).astype(np.uint8)
    return out


def extract_image_chip(image: Image, details: ChipDetails) -> Image:
    """Cut the chip described by `details`, as dlib's `extract_image_chip` with bilinear taps."""
    # dlib has a plain-copy shortcut for exactly angle == 0 at a 1:1 scale; real landmarks
    # never hit it (both are doubles from a least-squares fit), so it is not reproduced.
    rows, cols = details.rows, details.cols
    size = rows * cols
    height, width = image.shape[:2]
    # Depth of the pyramid: halve until the rect is no larger (in area) than the chip.
    depth = 0
    grow = 2.0
    rect = _rect_down(details.rect)
    while _area(rect) > size:
        rect = _rect_down(rect)
        depth += 1
        # Each level halves the image and a 2 px border avoids crop edge effects (as dlib).
        grow = grow * 2 + 2
    corners = _rotated_corners(details.rect, details.angle)
    lo = np.maximum(corners.min(axis=0) - grow, 0.0)
    hi = np.minimum(corners.max(axis=0) + grow, [width - 1.0, height - 1.0])
    out_shape = (rows, cols, *image.shape[2:])
    if (lo > hi).any():
        return np.zeros(out_shape, np.uint8)
    # dlib turns the real-valued crop into an integer rectangle by rounding each edge.
    bx0, by0 = (int(math.floor(v + 0.5)) for v in lo)
    bx1, by1 = (int(math.floor(v + 0.5)) for v in hi)
    source = image[by0 : by1 + 1, bx0 : bx1 + 1]
    levels = []
    for _ in range(depth):
        source = pyramid_down2(source)
        levels.append(source)

    left, top, right, bottom = details.rect
    rect = (left - bx0, top - by0, right - bx0, bottom - by0)
    level = -1
    while _area(_rect_down(rect)) > size:
        level += 1
        rect = _rect_down(rect)
    if level >= 0:
        source = levels[level]
    elif depth == 0:
        source = image[by0 : by1 + 1, bx0 : bx1 + 1]
    tl, tr, bl, _ = _rotated_corners(rect, details.angle)
    # dlib maps chip pixel (0, 0) to the rect's corner and (cols-1, 0) to the next corner,
    # so the step is width / (cols - 1), not width / cols.
    ux = (tr - tl) / max(cols - 1, 1)
    uy = (bl - tl) / max(rows - 1, 1)
    c = np.arange(cols, dtype=np.float64)[None, :]
    r = np.arange(rows, dtype=np.float64)[:, None]
    xs = tl[0] + c * ux[0] + r * uy[0]
    ys = tl[1] + c * ux[1] + r * uy[1]
    return _bilinear(source, xs, ys)


def dlib_chip(
    image: Image, landmarks5: npt.ArrayLike, size: int = 150, padding: float = 0.25
) -> Image:
    """Aligned size x size x 3 face chip, as `dlib.get_face_chip(img, shape, size, padding)`."""
    # dlib's own pipeline feeds whole-pixel landmarks (its predictor rounds them); pass
    # np.floor(landmarks + 0.5) to reproduce its chips bit for bit. Fractional landmarks
    # shift the chip by up to half a pixel (mean abs difference about 2 grey levels).
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    return extract_image_chip(image, face_chip_details(landmarks5, size, padding))


def arcface_chip(image: Image, points: npt.ArrayLike, size: int = 112) -> Image:
    """Align a face to insightface's 112-px template from arcface5 points (channel order kept)."""
    from insightface.utils.face_align import norm_crop

    return np.asarray(norm_crop(image, landmark=np.asarray(points, np.float32), image_size=size))
