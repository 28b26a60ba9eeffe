"""`jifang eval liveness`: presentations per class folder, counted and rated correctly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.liveness_eval import Presentation, presentations, rates, score_presentation


def _scored(label: str, *scores: float) -> list[Presentation]:
    return [Presentation(Path(f"{label}{i}.png"), label, s, 1, 1) for i, s in enumerate(scores)]


def test_rates_match_a_brute_force_count() -> None:
    items = [
        *_scored("live", 0.9, 0.2, 0.5, 0.49),
        *_scored("spoof_print", 0.1, 0.7),
        *_scored("spoof_replay", 0.5, 0.51, 0.0),
    ]
    for threshold in (0.0, 0.3, 0.5, 0.6, 1.0):
        result = rates(items, threshold)
        live = [p.score for p in items if p.label == "live"]
        assert result["bpcer"] == sum(s < threshold for s in live) / 4
        for attack, folder in (("print", "spoof_print"), ("replay", "spoof_replay")):
            group = [p.score for p in items if p.label == folder]
            assert result["apcer"][attack] == sum(s >= threshold for s in group) / len(group)
    assert rates(items, 0.5)["counts"] == {
        "live": 4,
        "spoof_print": 2,
        "spoof_replay": 3,
        "no_face": {"live": 0, "spoof_print": 0, "spoof_replay": 0},
    }


def test_a_missing_class_has_a_null_rate_and_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    assert rates(_scored("live", 0.9), 0.5)["apcer"] == {"print": None, "replay": None}
    assert rates(_scored("spoof_print", 0.9), 0.5)["bpcer"] is None
    with pytest.raises(ValueError, match="none of the class folders"):
        presentations(tmp_path)


def test_an_attack_folder_of_another_name_is_refused_by_name(tmp_path: Path) -> None:
    # Left out silently, its attacks would vanish from the APCER.
    for folder in ("live", "spoof_replay", "spoof_screen"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="spoof_screen: not a class folder"):
        presentations(tmp_path)
    (tmp_path / "spoof_screen" / "a.png").rename(tmp_path / "spoof_replay" / "b.png")
    (tmp_path / "spoof_screen").rmdir()
    assert [p.name for p in presentations(tmp_path)["spoof_replay"]] == ["a.png", "b.png"]


def test_a_video_is_one_presentation_scored_by_the_median_of_its_frames(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    for value in (10, 200, 30, 220, 240):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    seen = itertools.count()

    # A scorer that finds no face in the first frame and scores the rest by brightness.
    def scorer(image: np.ndarray) -> float | None:
        return None if next(seen) == 0 else float(image.mean()) / 255.0

    result = score_presentation(path, "live", scorer)
    assert result.frames == 5 and result.faces == 4
    assert result.score == pytest.approx(np.median([200, 30, 220, 240]) / 255.0, abs=0.03)
    blank = score_presentation(path, "live", lambda image: None)
    assert blank.faces == 0 and not blank.accepted(0.0)


def test_cli_counts_a_folder_built_here(
    tmp_path: Path, default_pack: Path, astronaut_bgr: np.ndarray
) -> None:
    torch = pytest.importorskip("torch")
    from jifang.cli import app
    from tests.training.test_pad_import import _write_weights
    from training.pad_import import import_pad

    del torch
    _write_weights(tmp_path / "weights")
    import_pad(default_pack, tmp_path / "weights", tmp_path / "md" / "with-pad")
    data = tmp_path / "data"
    for folder in ("live", "spoof_print"):
        (data / folder).mkdir(parents=True)
    cv2.imwrite(str(data / "live" / "face.png"), astronaut_bgr)
    cv2.imwrite(str(data / "live" / "no_face.png"), np.full((120, 120, 3), 128, np.uint8))
    cv2.imwrite(str(data / "spoof_print" / "print.jpg"), astronaut_bgr[::2, ::2])
    (data / "live" / "notes.txt").write_text("ignored: not an image")
    runner = CliRunner()
    # The image without a face is refused even at threshold 0.
    for threshold, bpcer, apcer in (("0.0", 0.5, 1.0), ("1.0", 1.0, 0.0)):
        out = tmp_path / f"result-{threshold}.json"
        run = runner.invoke(
            app,
            [
                "eval",
                "liveness",
                "--pack",
                "with-pad",
                "--model-dir",
                str(tmp_path / "md"),
                "--data",
                str(data),
                "--threshold",
                threshold,
                "--json",
                str(out),
            ],
        )
        assert run.exit_code == 0, run.output
        result = json.loads(out.read_text())
        assert result["threshold"] == float(threshold)
        assert result["counts"] == {
            "live": 2,
            "spoof_print": 1,
            "spoof_replay": 0,
            "no_face": {"live": 1, "spoof_print": 0, "spoof_replay": 0},
        }
        assert result["bpcer"] == bpcer and result["apcer"] == {"print": apcer, "replay": None}


def test_cli_refuses_a_pack_without_pad(tmp_path: Path, default_pack: Path) -> None:
    from jifang.cli import app

    (tmp_path / "live").mkdir()
    run = CliRunner().invoke(
        app, ["eval", "liveness", "--pack", str(default_pack), "--data", str(tmp_path)]
    )
    assert run.exit_code == 1 and "no passive PAD model" in run.output
