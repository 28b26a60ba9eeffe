"""dlib-style face chips and the eye-centre box: conventions and bad input (no dlib needed)."""

from __future__ import annotations

import numpy as np
import pytest

from models.convert.dlib_shape_predictor import ShapePredictorModel
from models.runtime.align import TEMPLATE5, dlib_chip, face_chip_details, pyramid_down2
from models.runtime.shape_predictor import box_from_eye_centers

SIZE = 150
PADDING = 0.25


def _template_points() -> np.ndarray:
    """Where dlib's template puts the 5 points inside a 150 px chip with 0.25 padding."""
    return (PADDING + TEMPLATE5) / (2 * PADDING + 1) * SIZE


def test_identity_framing_samples_half_way_between_pixels() -> None:
    # Landmarks already at the template: the chip rect is (0.5, 0.5)-(149.5, 149.5), so every
    # chip pixel is the truncated mean of a 2x2 block (dlib's inclusive-edge convention).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    chip = dlib_chip(image, _template_points(), SIZE, PADDING)
    blocks = image.astype(np.int32)
    expected = blocks[:150, :150] + blocks[1:151, :150] + blocks[:150, 1:151] + blocks[1:151, 1:151]
    np.testing.assert_array_equal(chip, expected // 4)


def test_rotated_face_is_levelled() -> None:
    points = _template_points()
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    turned = (points - 75) @ rot.T * 2 + 300
    details = face_chip_details(turned, SIZE, PADDING)
    assert details.angle == pytest.approx(angle)
    left, top, right, bottom = details.rect
    assert right - left + 1 == pytest.approx(300)
    assert ((left + right) / 2, (top + bottom) / 2) == pytest.approx((300, 300))


def test_outside_the_image_is_black() -> None:
    image = np.full((160, 100, 3), 200, np.uint8)
    far = _template_points() + 1000
    assert not dlib_chip(image, far).any()
    # Chip column c samples x = c + 60.5: all taps inside up to c = 38, none from c = 39 on.
    half = dlib_chip(image, _template_points() + [60, 0])
    assert half[:, :39].min() == 200 and not half[:, 39:].any()


def test_pyramid_down2_size_and_flat_image() -> None:
    image = np.full((101, 64, 3), 77, np.uint8)
    down = pyramid_down2(image)
    assert down.shape == ((101 - 3) // 2, (64 - 3) // 2, 3)
    # The 1-4-6-4-1 kernel sums to 256 per axis pass pair, so a flat image stays flat.
    assert (down == 77).all()
    assert pyramid_down2(np.zeros((8, 50), np.uint8)).size == 0


def test_big_face_goes_through_the_pyramid_and_keeps_its_content() -> None:
    image = np.zeros((1200, 1200, 3), np.uint8)
    image[:, 600:] = 255
    points = _template_points() * 6 + [600 - 75 * 6, 100]  # the face centre on the edge
    chip = dlib_chip(image, points)
    assert chip[:, :70].max() == 0 and chip[:, 80:].min() == 255


@pytest.mark.parametrize("landmarks", [np.zeros((4, 2)), np.full((5, 2), np.nan), np.zeros((5, 3))])
def test_bad_landmarks_are_rejected(landmarks: np.ndarray) -> None:
    with pytest.raises(ValueError, match="5x2"):
        dlib_chip(np.zeros((50, 50, 3), np.uint8), landmarks)


def test_bad_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        dlib_chip(np.zeros((50, 50), np.uint8), _template_points())


def _model_with_mean_shape(mean: list[list[float]]) -> ShapePredictorModel:
    return ShapePredictorModel(
        initial_shape=np.asarray(mean, np.float32),
        split_idx1=np.zeros((1, 1, 1), np.int32),
        split_idx2=np.zeros((1, 1, 1), np.int32),
        split_thresh=np.zeros((1, 1, 1), np.float32),
        leaf_values=np.zeros((1, 1, 2, 5, 2), np.float32),
        anchor_idx=np.zeros((1, 1), np.int32),
        deltas=np.zeros((1, 1, 2), np.float32),
    )


def test_box_from_eye_centers_puts_the_mean_eyes_on_the_points() -> None:
    mean = [[0.8, 0.3], [0.6, 0.3], [0.2, 0.3], [0.4, 0.3], [0.5, 0.7]]
    model = _model_with_mean_shape(mean)
    right_eye, left_eye = (170.0, 90.0), (110.0, 90.0)
    x0, y0, x1, y1 = box_from_eye_centers(model, right_eye, left_eye)
    assert x1 - x0 == pytest.approx(y1 - y0)
    side = x1 - 1 - x0  # the unit square spans the inclusive edge, as in dlib
    assert side == pytest.approx(60 / 0.4)
    placed = np.asarray(mean) * side + [x0, y0]
    assert placed[0:2].mean(axis=0) == pytest.approx(right_eye)
    assert placed[2:4].mean(axis=0) == pytest.approx(left_eye)
    with pytest.raises(ValueError, match="image-right"):
        box_from_eye_centers(model, left_eye, right_eye)
