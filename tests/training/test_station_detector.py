"""`jifang train station-detector` and `jifang eval station-detector` on rendered frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge_agent.station.config import VisionConfig
from edge_agent.station.detector_eval import (
    GT_COVER,
    LabelError,
    average_precision,
    coverage,
    load_labelled_set,
    read_frame,
    strips,
)
from edge_agent.station.sim.labelled import render_frame, render_set
from edge_agent.station.vision import ZoneAnalyzer
from jifang.cli import app as jifang_app
from models.errors import ModelError
from models.runtime.cylinder_detector import CylinderDetector
from models.station_pack import STATION_MANIFEST, load_cylinder_detector, verify_station_pack
from models.types import Task

pytest.importorskip("torch")

from training.commands import register  # noqa: E402

TRAIN_ARGS = [
    "--epochs", "1", "--batch-size", "4", "--input-width", "128", "--input-height", "96",
    "--val-fraction", "0.25", "--no-progress",
]  # fmt: skip


@pytest.fixture
def train_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(rendered data, model dir) with a pack `cyl` trained for one epoch by the command."""
    root = tmp_path_factory.mktemp("station-detector")
    data = render_set(root / "data", {"cam_a": 6, "cam_b": 6})
    models = root / "models"
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app,
        ["station-detector", "--data", str(data), "--out", "cyl", "--model-dir", str(models),
         *TRAIN_ARGS],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch   0" in result.output and "export check" in result.output
    return data, models


def test_training_exports_a_pack_the_station_vision_runs(trained: tuple[Path, Path]) -> None:
    data, models = trained
    pack = models / "cyl"
    manifest = verify_station_pack(pack)
    entry = manifest.file(Task.CYLINDER_DETECTOR)
    assert entry is not None and entry.wrapper == "centernet_cylinder"
    assert entry.params["input_width"] == 128 and entry.params["input_height"] == 96
    check = manifest.evaluation["export_check"]
    assert check["frames"] > 0 and check["max_heat_diff"] <= 1e-4
    run = models / "cyl.run"
    assert (run / "args.json").is_file() and (run / "checkpoint.pth").is_file()
    assert len((run / "epochs.jsonl").read_text().splitlines()) == 1
    split = json.loads((run / "split.json").read_text())
    # Held out: the last quarter of each view in frame order (time), not a random pick.
    assert sorted(Path(p).name for p in split["val_images"]) == [
        "cam_a_300.jpg", "cam_a_375.jpg", "cam_b_300.jpg", "cam_b_375.jpg",
    ]  # fmt: skip

    # The station loads the detector by the manifest (real ONNX session) and uses it.
    frame = read_frame(next((data / "cam_a").glob("*.jpg")))
    h, w = frame.shape[:2]
    vision = VisionConfig(station_pack=pack, qr_every_n_frames=100)
    analyzer = ZoneAnalyzer("real", strips(w, h, 3), vision, (w, h))
    assert analyzer.uses_detector
    observations = analyzer.process(frame, 0.0)
    assert [o.zone_id for o in observations] == ["z0", "z1", "z2"]
    detector = load_cylinder_detector(pack)
    assert isinstance(detector, CylinderDetector)
    boxes = [d.box for d in detector.detect(frame, vision.detector_score_threshold)]
    assert analyzer.cylinder_boxes == tuple(tuple(b) for b in boxes)
    for zone, obs in zip(strips(w, h, 3), observations, strict=True):
        # Presence is the detections' cover of the zone, at the configured share.
        expected = coverage(zone, boxes, (h, w))
        assert obs.cylinder_present == (obs.cylinder_fraction >= vision.detector_zone_cover)
        assert obs.cylinder_fraction == pytest.approx(expected, abs=0.08)


def test_without_a_detector_presence_is_the_background(tmp_path: Path) -> None:
    frame, _ = render_frame(np.random.default_rng(1), count=0)
    h, w = frame.shape[:2]
    analyzer = ZoneAnalyzer("real", strips(w, h, 2), VisionConfig(), (w, h))
    assert not analyzer.uses_detector
    analyzer.process(frame, 0.0)
    changed = frame.copy()
    changed[:, : w // 2] = 255  # a bright object fills the first zone
    first, second = analyzer.process(changed, 1.0)
    assert first.cylinder_present and not second.cylinder_present


def test_a_broken_station_pack_stops_the_station(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    pack = tmp_path / "broken"
    shutil.copytree(trained[1] / "cyl", pack)
    (pack / "cylinder_detector.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="fails its checksum"):
        ZoneAnalyzer("real", strips(384, 216, 2), VisionConfig(station_pack=pack), (384, 216))
    (pack / STATION_MANIFEST).unlink()
    with pytest.raises(ModelError, match="not a station pack"):
        load_cylinder_detector(pack)


def test_eval_station_detector_counts(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = trained
    out = tmp_path / "eval.json"
    # The jifang CLI itself: it registers `eval station-detector` (edge_agent) under eval.
    result = CliRunner().invoke(
        jifang_app,
        ["eval", "station-detector", "--pack", "cyl", "--model-dir", str(models), "--data",
         str(data), "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    images = load_labelled_set(data).images
    assert figures["images"] == len(images) == 12
    assert figures["boxes"] == sum(len(i.boxes) for i in images)
    assert 0.0 <= figures["box_ap50"] <= 1.0 and 0.0 <= figures["presence_accuracy"] <= 1.0
    counts = figures["presence"]
    assert counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == 12 * 4
    # The positives are the zones the labels cover, counted here independently.
    truth = 0
    for item in images:
        frame = read_frame(item.path)
        h, w = frame.shape[:2]
        truth += sum(
            coverage(z, item.pixel_boxes(w, h), (h, w)) >= GT_COVER for z in strips(w, h, 4)
        )
    assert counts["tp"] + counts["fn"] == truth
    assert figures["presence_accuracy"] == pytest.approx(
        (counts["tp"] + counts["tn"]) / 48, abs=1e-4
    )
    assert set(figures["presence_by_group"]) == {"cam_a", "cam_b"}


def test_missing_labels_folder_is_named(train_app: typer.Typer, tmp_path: Path) -> None:
    data = render_set(tmp_path / "data", {"cam_a": 2})
    for label in (data / "cam_a" / "labels").iterdir():
        label.unlink()
    (data / "cam_a" / "labels").rmdir()
    result = CliRunner().invoke(
        train_app,
        ["station-detector", "--data", str(data), "--out", str(tmp_path / "p"), *TRAIN_ARGS],
    )
    assert result.exit_code == 1
    assert f"{data / 'cam_a'}: has images but no labels/ folder" in result.output
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 0.2", "expected 5 fields"),
        ("0 0.5 half 0.2 0.3", "not numbers"),
        ("1 0.5 0.5 0.2 0.3", "class 1"),
        ("0 1.5 0.5 0.2 0.3", "not normalised"),
    ],
)
def test_malformed_label_line_names_file_and_line(
    train_app: typer.Typer, tmp_path: Path, line: str, message: str
) -> None:
    data = render_set(tmp_path / "data", {"cam_a": 2})
    label = data / "cam_a" / "labels" / "cam_a_75.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.3\n{line}\n")
    result = CliRunner().invoke(
        train_app,
        ["station-detector", "--data", str(data), "--out", str(tmp_path / "p"), *TRAIN_ARGS],
    )
    assert result.exit_code == 1
    assert f"{label}:2: " in result.output and message in result.output
    with pytest.raises(LabelError, match=f"{label}:2: "):
        load_labelled_set(data)


def test_unlabelled_image_is_skipped_not_empty(tmp_path: Path) -> None:
    data = render_set(tmp_path / "data", {"cam_a": 3})
    (data / "cam_a" / "labels" / "cam_a_75.txt").unlink()
    (data / "cam_a" / "labels" / "cam_a_0.txt").write_text("")
    labelled = load_labelled_set(data)
    assert [i.path.name for i in labelled.images] == ["cam_a_0.jpg", "cam_a_150.jpg"]
    assert labelled.images[0].boxes.shape == (0, 4)
    assert [p.name for p in labelled.unlabelled] == ["cam_a_75.jpg"]


def test_average_precision() -> None:
    truth = [np.asarray([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.zeros((0, 4))]
    perfect = [(truth[0], np.asarray([0.9, 0.8])), (np.zeros((0, 4)), np.zeros(0))]
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    # A false positive (on the empty image) ranked between the two hits: P = 1, 2/3 at R = .5, 1.
    mixed = [
        (truth[0], np.asarray([0.9, 0.7])),
        (np.asarray([[0, 0, 10, 10]], np.float32), np.asarray([0.8])),
    ]
    assert average_precision(mixed, truth) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # A duplicate of a matched box is a false positive, a miss lowers recall.
    dup = [(np.asarray([[0, 0, 10, 10], [1, 0, 10, 10]], np.float32), np.asarray([0.9, 0.8])),
           (np.zeros((0, 4)), np.zeros(0))]  # fmt: skip
    assert average_precision(dup, truth) == pytest.approx(0.5)
