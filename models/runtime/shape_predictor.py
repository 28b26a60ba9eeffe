"""dlib's 5-point regression-tree landmark predictor, reproduced in numpy.

Landmark order of dlib's `shape_predictor_5_face_landmarks` (checked on skimage's astronaut
and LFW images; "image-right" means larger x in an upright, unmirrored picture):

    0  outer corner of the eye on the image-right side (the subject's left eye)
    1  inner corner of that eye
    2  outer corner of the eye on the image-left side (the subject's right eye)
    3  inner corner of that eye
    4  base of the nose (below the tip, between the nostrils)

Box convention: `box = (x0, y0, x1, y1)` with x1, y1 exclusive, like `Detection.box`. A dlib
`rectangle(l, t, r, b)` (inclusive right/bottom) is the box `(l, t, r + 1, b + 1)`. dlib maps
the unit square onto the rectangle's corner pixels, i.e. onto [l, r] x [t, b], so the mapping
here uses x1 - 1 and y1 - 1; getting this wrong shifts every point by up to 1 px.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.convert.dlib_shape_predictor import ShapePredictorModel, load_npz
from models.errors import ModelError
from models.runtime.base import KeypointScheme
from models.types import Detection

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
GrayImage = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]

RIGHT_EYE_POINTS = (0, 1)
"""dlib point indices of the eye on the image-right side (subject's left eye)."""
LEFT_EYE_POINTS = (2, 3)
"""dlib point indices of the eye on the image-left side (subject's right eye)."""
NOSE_POINT = 4


def dlib_gray(image: npt.NDArray[np.uint8]) -> GrayImage:
    """Convert an HxWx3 uint8 image to the intensity dlib's predictor reads from colour input."""
    if image.ndim == 2:
        return np.ascontiguousarray(image, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected HxW or HxWx3 uint8, got {image.shape} {image.dtype}")
    # dlib's get_pixel_intensity on an rgb_pixel is the truncated plain mean of the three
    # channels (not a luma weighting), so channel order (RGB or BGR) does not matter.
    total = image[..., 0].astype(np.uint16)
    total += image[..., 1]
    total += image[..., 2]
    return (total // 3).astype(np.uint8)


def similarity_matrix(src: npt.ArrayLike, dst: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Least-squares 2x2 scale-rotation part of the similarity mapping src points onto dst."""
    src64 = np.asarray(src, np.float64)
    dst64 = np.asarray(dst, np.float64)
    s = src64 - src64.mean(axis=0)
    d = dst64 - dst64.mean(axis=0)
    sigma = float((s * s).sum())
    if sigma == 0.0:
        return np.eye(2)
    # Closed form of Umeyama's rotation+scale solution in 2-D (no reflection).
    a = float((s * d).sum()) / sigma
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / sigma
    return np.array([[a, -b], [b, a]])


class ShapePredictor:
    """Cascade-of-regression-trees landmark predictor (dlib semantics, numpy only)."""

    def __init__(self, model: ShapePredictorModel) -> None:
        model.validate()
        self.model = model
        levels, trees, splits = model.split_idx1.shape
        self._depth = model.tree_depth
        self._splits = splits
        self._tree_ids = np.arange(trees)
        # Leaves flattened to [C, T*L, P*2] so one fancy-index gathers a level's increments.
        self._leaves = model.leaf_values.reshape(levels, trees * (splits + 1), -1)
        self._leaf_base = self._tree_ids * (splits + 1) - splits
        self._initial = model.initial_shape.astype(np.float32)
        # Warm up once so the first real face is not the slow one.
        self.predict(np.zeros((16, 16), np.uint8), (0.0, 0.0, 16.0, 16.0))

    @classmethod
    def from_npz(cls, path: str | Path) -> ShapePredictor:
        """Load the runtime model written by models.convert.dlib_shape_predictor.save_npz."""
        return cls(load_npz(path))

    @property
    def num_parts(self) -> int:
        """Number of landmarks predicted."""
        return self.model.num_parts

    def predict(self, gray: GrayImage, box: Box) -> FloatArray:
        """Landmarks [P, 2] (x, y) in pixels for the face in `box` (x0, y0, x1, y1 exclusive).

        `gray` is HxW uint8; an HxWx3 uint8 colour image is also accepted and read the way
        dlib reads colour (mean of the channels), converting only the sampled pixels.
        """
        colour = gray.ndim == 3 and gray.shape[2] == 3
        if not (gray.ndim == 2 or colour) or gray.dtype != np.uint8:
            raise ValueError(f"expected an HxW or HxWx3 uint8 image, got {gray.shape} {gray.dtype}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"empty box {box}")
        origin = np.array([x0, y0])
        # dlib's unnormalizing transform sends (1, 1) to the inclusive bottom-right pixel.
        scale = np.array([x1 - 1.0 - x0, y1 - 1.0 - y0])
        height, width = gray.shape[:2]
        flat = gray.reshape(height * width, -1)
        model = self.model
        shape = self._initial.copy()
        for level in range(model.split_idx1.shape[0]):
            # Feature pixels ride on their anchor landmark, offset by the delta rotated and
            # scaled the way the mean shape maps onto the current estimate.
            tform = similarity_matrix(self._initial, shape).astype(np.float32)
            deltas = model.deltas[level]
            # dlib computes this part in float32, then maps to the image in double.
            local = deltas @ tform.T + shape[model.anchor_idx[level]]
            pix = np.floor(local.astype(np.float64) * scale + origin + 0.5).astype(np.int64)
            inside = (
                (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
            )
            values = np.zeros(len(pix), np.float32)
            taps = flat[pix[inside, 1] * width + pix[inside, 0]]
            values[inside] = taps.sum(axis=1, dtype=np.uint16) // 3 if colour else taps[:, 0]
            # All trees of the level descend together, one depth step per iteration.
            node = np.zeros(len(self._tree_ids), np.int64)
            idx1 = model.split_idx1[level]
            idx2 = model.split_idx2[level]
            thresh = model.split_thresh[level]
            for _ in range(self._depth):
                diff = values[idx1[self._tree_ids, node]] - values[idx2[self._tree_ids, node]]
                node = 2 * node + np.where(diff > thresh[self._tree_ids, node], 1, 2)
            increments = self._leaves[level][self._leaf_base + node]
            # dlib adds the trees one after another in float32; a running sum keeps that
            # order so pixel lookups round the same way in the next level.
            stacked = np.concatenate([shape.reshape(1, -1), increments], axis=0)
            shape = np.cumsum(stacked, axis=0, dtype=np.float32)[-1].reshape(-1, 2)
        return np.asarray(shape.astype(np.float64) * scale + origin, np.float32)


def box_from_eye_centers(
    model: ShapePredictorModel,
    right_eye_xy: tuple[float, float] | npt.ArrayLike,
    left_eye_xy: tuple[float, float] | npt.ArrayLike,
) -> Box:
    """Square box (x0, y0, x1, y1 exclusive) putting the mean shape's eye centres on the points.

    `right_eye_xy` is the centre of the eye on the image-right side (dlib points 0-1, the
    subject's left eye); `left_eye_xy` the image-left one (points 2-3). The box is the
    least-squares fit with no rotation: a detector box has none either, and the cascade
    then rotates the shape itself.
    """
    mean = model.initial_shape.astype(np.float64)
    ref = np.stack(
        [mean[list(RIGHT_EYE_POINTS)].mean(axis=0), mean[list(LEFT_EYE_POINTS)].mean(axis=0)]
    )
    img = np.stack([np.asarray(right_eye_xy, np.float64), np.asarray(left_eye_xy, np.float64)])
    if img.shape != (2, 2) or not np.isfinite(img).all():
        raise ValueError(f"eye centres must be two finite (x, y) points, got {img.tolist()}")
    ref_d = ref[0] - ref[1]
    side = float((img[0] - img[1]) @ ref_d) / float(ref_d @ ref_d)
    if side <= 0:
        raise ValueError(
            "eye centres are in the wrong order or coincide: "
            "right_eye_xy must be the eye on the image-right side"
        )
    # The unit square spans `side` pixels between the corner pixel centres (dlib convention).
    x0, y0 = img.mean(axis=0) - side * ref.mean(axis=0)
    return (float(x0), float(y0), float(x0 + side + 1.0), float(y0 + side + 1.0))


class ShapePredictorLandmarks:
    """The landmark-model interface over ShapePredictor: dlib's 5 points inside a detection.

    With `start="eyes"` and a detector that reports eye centres (BlazeFace), the cascade
    starts from the box that puts the mean shape's eyes on them, which reproduces dlib's own
    detector framing; otherwise it starts from the detection box.
    """

    keypoint_scheme: KeypointScheme = "dlib5"

    def __init__(self, predictor: ShapePredictor, start: Literal["eyes", "box"] = "eyes") -> None:
        self.predictor = predictor
        self.start = start

    def start_box(self, detection: Detection) -> Box:
        """The box the cascade starts from for one detection."""
        names = detection.keypoint_names
        if self.start == "eyes" and "right_eye" in names and "left_eye" in names:
            a = detection.keypoints[names.index("right_eye")]
            b = detection.keypoints[names.index("left_eye")]
            # Order by image side, whatever the detector calls them.
            image_right, image_left = (a, b) if a[0] >= b[0] else (b, a)
            return box_from_eye_centers(self.predictor.model, image_right, image_left)
        return detection.box

    def landmarks(self, gray: np.ndarray, detection: Detection) -> FloatArray:
        """5x2 dlib landmarks in pixel coordinates."""
        return self.predictor.predict(gray, self.start_box(detection))


def build(path: Path, params: Mapping[str, Any], threads: int) -> ShapePredictorLandmarks:
    """Factory used by the wrapper registry."""
    start = str(params.get("start", "eyes"))
    if start not in ("eyes", "box"):
        raise ModelError(f"{path.name}: params.start must be 'eyes' or 'box', got {start!r}")
    try:
        predictor = ShapePredictor.from_npz(path)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{path.name}: not a usable shape predictor ({err})") from err
    return ShapePredictorLandmarks(predictor, "eyes" if start == "eyes" else "box")
