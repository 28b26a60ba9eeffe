"""BlazeFace detector on real ONNX sessions: the astronaut photo, fallbacks, and bad input."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from models.convert.mediapipe_models import MEDIAPIPE_DIST, MEDIAPIPE_VERSION, build_mediapipe_onnx
from models.convert.wheel_source import default_wheel_cache, find_cached_wheel
from models.errors import ModelError
from models.runtime.blazeface import (
    FULL_RANGE_ANCHORS,
    KEYPOINT_NAMES,
    MEDIAPIPE_NMS_IOU,
    MEDIAPIPE_SCORE_THRESHOLD,
    SHORT_RANGE_ANCHORS,
    BlazeFaceDetector,
    detect_multiscale,
    generate_anchors,
    weighted_nms,
)
from models.types import Detection

# Where the astronaut's face is in skimage's 512x512 photo (checked by eye on a drawn box).
ASTRONAUT_FACE_CENTRE = (225.0, 128.0)
ASTRONAUT_FACE_WIDTH = (70.0, 130.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = default_wheel_cache()
    if find_cached_wheel(MEDIAPIPE_DIST, MEDIAPIPE_VERSION, cache) is None:
        pytest.skip(f"no mediapipe {MEDIAPIPE_VERSION} wheel in {cache} (set JIFANG_WHEEL_CACHE)")
    folder = tmp_path_factory.mktemp("blazeface")
    for variant in ("short", "full"):
        onnx.save(build_mediapipe_onnx(f"blazeface_{variant}", cache), folder / f"{variant}.onnx")
    return folder


@pytest.fixture(scope="module")
def short(model_dir: Path) -> BlazeFaceDetector:
    return BlazeFaceDetector(
        model_dir / "short.onnx", "short", MEDIAPIPE_SCORE_THRESHOLD["short"], MEDIAPIPE_NMS_IOU
    )


@pytest.fixture(scope="module")
def full(model_dir: Path) -> BlazeFaceDetector:
    return BlazeFaceDetector(
        model_dir / "full.onnx", "full", MEDIAPIPE_SCORE_THRESHOLD["full"], MEDIAPIPE_NMS_IOU
    )


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("scikit-image (astronaut photo) not installed")
    from skimage.data import astronaut

    return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)


def _centre(det: Detection) -> tuple[float, float]:
    x0, y0, x1, y1 = det.box
    return (x0 + x1) / 2, (y0 + y1) / 2


def _assert_astronaut_face(det: Detection, offset: tuple[float, float] = (0.0, 0.0)) -> None:
    cx, cy = _centre(det)
    assert abs(cx - ASTRONAUT_FACE_CENTRE[0] - offset[0]) < 20
    assert abs(cy - ASTRONAUT_FACE_CENTRE[1] - offset[1]) < 20
    assert ASTRONAUT_FACE_WIDTH[0] < det.box[2] - det.box[0] < ASTRONAUT_FACE_WIDTH[1]
    points = dict(zip(det.keypoint_names, det.keypoints, strict=True))
    # Eyes above the nose, nose above the mouth (image y grows downwards).
    assert points["right_eye"][1] < points["nose_tip"][1] < points["mouth_center"][1]
    assert points["left_eye"][1] < points["nose_tip"][1]
    # "right" is the subject's right: it appears on the image's left in an unmirrored photo.
    assert points["right_eye"][0] < points["nose_tip"][0] < points["left_eye"][0]
    assert points["right_ear"][0] < points["right_eye"][0]
    assert points["left_ear"][0] > points["left_eye"][0]
    x0, y0, x1, y1 = det.box
    for name in ("right_eye", "left_eye", "nose_tip", "mouth_center"):
        assert x0 < points[name][0] < x1 and y0 < points[name][1] < y1


@pytest.mark.parametrize("variant", ["short", "full"])
def test_astronaut_has_one_face_in_the_right_place(
    variant: str, request: pytest.FixtureRequest, astronaut_bgr: np.ndarray
) -> None:
    detector: BlazeFaceDetector = request.getfixturevalue(variant)
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    assert face.keypoint_names == KEYPOINT_NAMES
    assert face.keypoints.shape == (6, 2) and face.keypoints.dtype == np.float32
    _assert_astronaut_face(face)


def test_grayscale_input_is_accepted(short: BlazeFaceDetector, astronaut_bgr: np.ndarray) -> None:
    gray = np.asarray(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    faces = short.detect(gray)
    assert len(faces) == 1
    _assert_astronaut_face(faces[0])


@pytest.mark.parametrize(("frame_hw", "at_yx"), [((300, 420), (0, 90)), ((420, 300), (70, 0))])
def test_boxes_map_back_through_the_letterbox(
    short: BlazeFaceDetector,
    astronaut_bgr: np.ndarray,
    frame_hw: tuple[int, int],
    at_yx: tuple[int, int],
) -> None:
    # The photo's top-left 300x300 (which holds the face) inside a wider or a taller frame,
    # so the letterbox pads top/bottom in one case and left/right in the other.
    frame = np.zeros((*frame_hw, 3), np.uint8)
    y, x = at_yx
    frame[y : y + 300, x : x + 300] = astronaut_bgr[:300, :300]
    faces = short.detect(frame)
    assert len(faces) == 1
    _assert_astronaut_face(faces[0], offset=(x, y))


def test_blank_frame_has_no_face(short: BlazeFaceDetector, full: BlazeFaceDetector) -> None:
    blank = np.full((480, 640, 3), 127, np.uint8)
    assert short.detect(blank) == []
    assert full.detect(blank) == []
    assert detect_multiscale(short, blank) == []


def test_multiscale_pads_a_tight_crop(short: BlazeFaceDetector, astronaut_bgr: np.ndarray) -> None:
    crop = np.ascontiguousarray(astronaut_bgr[95:165, 190:260])  # face cut at every edge
    assert short.detect(crop) == []
    faces = detect_multiscale(short, crop)
    assert len(faces) == 1
    cx, cy = _centre(faces[0])
    assert abs(cx - (ASTRONAUT_FACE_CENTRE[0] - 190)) < 15
    assert abs(cy - (ASTRONAUT_FACE_CENTRE[1] - 95)) < 15


def test_multiscale_tiles_a_small_face_in_a_big_photo(
    short: BlazeFaceDetector, astronaut_bgr: np.ndarray
) -> None:
    # 3000x2250 (6.75 MP) frame, face ~150 px wide: ~6 px after the whole-frame letterbox.
    frame = np.full((2250, 3000, 3), 128, np.uint8)
    photo = cv2.resize(astronaut_bgr, (819, 819))
    frame[1200:2019, 1700:2519] = photo
    assert short.detect(frame) == []
    faces = detect_multiscale(short, frame)
    assert len(faces) == 1
    scale = 819 / 512
    cx, cy = _centre(faces[0])
    assert abs(cx - (1700 + ASTRONAUT_FACE_CENTRE[0] * scale)) < 25
    assert abs(cy - (1200 + ASTRONAUT_FACE_CENTRE[1] * scale)) < 25


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64, 3), np.float32),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((0, 64, 3), np.uint8),
        np.zeros((2, 64, 64, 3), np.uint8),
    ],
)
def test_bad_images_are_refused(short: BlazeFaceDetector, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected"):
        short.detect(bad)


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load"):
        BlazeFaceDetector(tmp_path / "absent.onnx", "short", 0.5, 0.3)


def test_corrupt_model_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07 definitely not a protobuf model")
    with pytest.raises(ModelError):
        BlazeFaceDetector(path, "short", 0.5, 0.3)


def test_variant_must_match_the_file(model_dir: Path) -> None:
    with pytest.raises(ModelError, match="not a BlazeFace full-range model"):
        BlazeFaceDetector(model_dir / "short.onnx", "full", 0.6, 0.3)


@pytest.mark.parametrize(
    ("variant", "score", "iou", "threads"),
    [("tiny", 0.5, 0.3, 1), ("short", 1.5, 0.3, 1), ("short", 0.5, 0.0, 1), ("short", 0.5, 0.3, 0)],
)
def test_bad_parameters_are_refused(
    model_dir: Path, variant: str, score: float, iou: float, threads: int
) -> None:
    with pytest.raises(ValueError):
        BlazeFaceDetector(model_dir / "short.onnx", variant, score, iou, threads)  # type: ignore[arg-type]


def test_inference_failure_becomes_model_error(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, astronaut_bgr: np.ndarray
) -> None:
    detector = BlazeFaceDetector(model_dir / "short.onnx", "short", 0.5, 0.3, threads=1)

    def failing_run(*args: object, **kwargs: object) -> None:
        raise ort_state.RuntimeException("simulated kernel failure")

    monkeypatch.setattr(detector._session, "run", failing_run)
    with pytest.raises(ModelError, match="simulated kernel failure"):
        detector.detect(astronaut_bgr)


def test_anchor_counts_match_the_models() -> None:
    short = generate_anchors(SHORT_RANGE_ANCHORS)
    full = generate_anchors(FULL_RANGE_ANCHORS)
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    # Short range: a 16x16 map with 2 anchors per cell, then 8x8 with 6 per cell.
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16, 1.0, 1.0])
    np.testing.assert_allclose(short[1], short[0])
    np.testing.assert_allclose(short[2, :2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[512, :2], [0.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(short[512:518], np.repeat(short[512:513], 6, axis=0))
    np.testing.assert_allclose(full[-1, :2], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    points = np.zeros((3, 6, 2), np.float32)
    points[1] += 1.0
    kept = weighted_nms(boxes, scores, points, iou_threshold=0.3)
    assert len(kept) == 2
    box, score, kps = kept[0]
    assert score == pytest.approx(0.9)  # the cluster keeps its best score
    assert box[0] == pytest.approx(0.6 / 1.5)  # x0 blended by score: (0*0.9 + 1*0.6) / 1.5
    assert kps[0, 0] == pytest.approx(0.6 / 1.5)
    np.testing.assert_allclose(kept[1][0], boxes[2])
