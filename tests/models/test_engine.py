"""FaceEngine on the default pack with real ONNX sessions, and the face commands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from jifang.cli import app
from models.errors import ModelError
from models.gallery import Gallery
from tests.cli.test_cli import BLOCK_TORCH
from tests.models import faces


def test_detects_the_astronaut_with_landmarks_inside_the_box(engine) -> None:
    found = engine.detect(faces.astronaut())
    assert len(found) == 1
    face = found[0]
    x0, y0, x1, y1 = face.detection.box
    assert 150 < x0 < 200 and 240 < x1 < 300 and 40 < y0 < 110 and 150 < y1 < 200
    assert face.landmarks5.shape == (5, 2)
    assert np.all((face.landmarks5[:, 0] > x0) & (face.landmarks5[:, 0] < x1))
    # dlib5: points 0-1 on the image-right eye, 2-3 on the image-left eye, 4 the nose base.
    assert face.landmarks5[0, 0] > face.landmarks5[2, 0]
    assert face.landmarks5[4, 1] > face.landmarks5[:4, 1].max()


def test_embeddings_are_normalised_and_separate_people(engine) -> None:
    def embedding(image: np.ndarray) -> np.ndarray:
        acquired = engine.acquire(image)
        assert acquired is not None and acquired.method == "detected"
        return engine.embed(acquired.image, acquired.face)

    same = [embedding(v) for v in faces.variants(faces.astronaut())]
    other = [embedding(v) for v in faces.variants(faces.cameraman())]
    assert all(abs(float(np.linalg.norm(e)) - 1.0) < 1e-5 for e in same + other)
    genuine = [engine.compare(same[0], e) for e in same[1:]]
    impostor = [engine.compare(a, b) for a in same for b in other]
    assert min(genuine) > 0.9
    assert max(impostor) < min(genuine) - 0.1


def test_no_face_in_a_blank_frame(engine) -> None:
    assert engine.detect(np.full((480, 640, 3), 90, np.uint8)) == []
    assert engine.acquire(np.full((480, 640, 3), 90, np.uint8), whole_crop=False) is None


def test_tight_crop_is_found_after_padding(engine) -> None:
    tight = faces.astronaut()[85:170, 185:265]
    acquired = engine.acquire(tight)
    assert acquired is not None
    assert acquired.method in ("detected", "padded")
    full = engine.acquire(faces.astronaut())
    assert full is not None
    score = engine.compare(
        engine.embed(acquired.image, acquired.face), engine.embed(full.image, full.face)
    )
    assert score > 0.85


def test_quality_scores_drop_for_blur_and_darkness(engine) -> None:
    image = faces.astronaut()
    face = engine.detect(image)[0]
    sharp = engine.quality(image, face)
    blurred = engine.quality(cv2.GaussianBlur(image, (0, 0), 4), face)
    dark = engine.quality((image * 0.15).astype(np.uint8), face)
    assert sharp.sharpness > 0.6 and blurred.sharpness < sharp.sharpness / 2
    assert dark.exposure < sharp.exposure / 2
    assert abs(sharp.yaw_deg) < 15 and 60 < sharp.face_px < 130


def test_bad_input_is_a_clear_error(engine) -> None:
    with pytest.raises(ModelError, match="uint8"):
        engine.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ModelError, match="unsupported image shape"):
        engine.detect(np.zeros((10, 10, 5), np.uint8))


def test_gallery_ranks_operators_and_reports_margin() -> None:
    gallery = Gallery(3)
    gallery.add("a", np.array([[1, 0, 0], [0.8, 0.6, 0]], np.float32))
    gallery.add("b", np.array([0, 1, 0], np.float32))
    gallery.add("c", np.array([0, 0, 1], np.float32))
    result = gallery.search(np.array([0.6, 0.8, 0], np.float32), k=2)
    assert [m.label for m in result.matches] == ["a", "b"]
    assert result.matches[0].score == pytest.approx(0.96)
    assert result.margin == pytest.approx(0.96 - 0.8)
    assert gallery.remove("a") == 2
    assert gallery.search(np.array([1, 0, 0], np.float32)).best.label in ("b", "c")
    with pytest.raises(ValueError, match="4 values"):
        gallery.add("d", np.zeros(4, np.float32))


def test_edge_runtime_runs_the_pack_without_torch(default_pack: Path) -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import numpy as np, skimage.data
        from pathlib import Path
        from models.engine import FaceEngine
        engine = FaceEngine(Path({str(default_pack)!r}))
        image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
        face = engine.detect(image)[0]
        vector = engine.embed(image, face)
        assert vector.shape == (128,)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", round(float(np.linalg.norm(vector)), 4))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 1.0"


def test_face_commands(default_pack: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--pack", str(default_pack)]
    a, b, c = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"
    cv2.imwrite(str(a), faces.astronaut())
    cv2.imwrite(str(b), faces.variants(faces.astronaut())[1])
    cv2.imwrite(str(c), faces.cameraman())

    drawn = tmp_path / "out" / "drawn.png"
    result = runner.invoke(app, ["face", "detect", str(a), "--draw", str(drawn), *common])
    assert result.exit_code == 0, result.output
    assert "1 face(s)" in result.output and cv2.imread(str(drawn)) is not None

    same = runner.invoke(app, ["face", "compare", str(a), str(b), *common])
    other = runner.invoke(app, ["face", "compare", str(a), str(c), *common])
    s_same = float(same.output.split("similarity ")[1].split()[0])
    s_other = float(other.output.split("similarity ")[1].split()[0])
    assert s_same > s_other + 0.1

    gallery = tmp_path / "gallery.npz"
    enrolled = runner.invoke(
        app, ["face", "enroll", "op-astronaut", str(a), "--gallery", str(gallery), *common]
    )
    assert enrolled.exit_code == 0, enrolled.output
    runner.invoke(app, ["face", "enroll", "op-camera", str(c), "--gallery", str(gallery), *common])
    found = runner.invoke(app, ["face", "identify", str(b), "--gallery", str(gallery), *common])
    assert found.exit_code == 0, found.output
    assert found.output.splitlines()[0].split()[1] == "op-astronaut"

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    refused = runner.invoke(app, ["face", "compare", str(a), str(blank), *common])
    assert refused.exit_code == 1 and "no face found" in refused.output
    missing = runner.invoke(app, ["face", "detect", str(tmp_path / "nope.png"), *common])
    assert missing.exit_code == 1 and "nope.png" in missing.output


def test_eval_verify_writes_per_set_json(default_pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "verify",
            "--pack",
            str(default_pack),
            "--data",
            str(data.parent),
            "--threshold",
            "0.93",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())["sets"]["tiny"]
    assert report["images"] == 8 and report["failure_to_acquire"] == 0.0
    assert report["genuine_pairs"] == 12 and report["impostor_pairs"] == 16
    assert report["fnmr_at_fmr"] == {}  # 16 impostor pairs support no standard FMR
    assert report["fnmr_at_threshold"] == 0.0 and report["fmr_at_threshold"] == 0.0
    assert "tiny" in result.output


def test_dense_landmarks_follow_the_face(engine) -> None:
    image = faces.astronaut()
    face = engine.detect(image)[0]
    dense = engine.dense_landmarks(image, face)
    assert dense.points.shape == (468, 3) and dense.face_score > 0.9
    x0, y0, x1, y1 = face.detection.box
    inside = (
        (dense.points[:, 0] > x0 - 10)
        & (dense.points[:, 0] < x1 + 10)
        & (dense.points[:, 1] > y0 - 15)
        & (dense.points[:, 1] < y1 + 10)
    )
    assert inside.mean() > 0.95
    # FaceMesh point 1 is the nose tip: a few pixels above dlib's nose base.
    assert np.linalg.norm(dense.points[1, :2] - face.landmarks5[4]) < 10
    blank = engine.dense.landmarks(np.full_like(image, 90), face.detection)
    assert blank.face_score < 0.1
