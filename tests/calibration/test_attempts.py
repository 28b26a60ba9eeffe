"""`jifang eval attempts`: the rotation protocol, sequences as one probe, the CLI on real
photos through the default pack's ONNX sessions, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.attempts import Unit, attempt_scores, set_attempts, units_of
from calibration.datasets import EmbeddedSet
from jifang.cli import app
from tests.models import faces


def _unit(person: str, i: int, rng: np.random.Generator) -> Unit:
    v = rng.normal(size=8).astype(np.float32)
    return Unit(person, f"{person}/{i}.png", v / np.linalg.norm(v))


def test_rotation_protocol_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    units = [_unit("a", i, rng) for i in range(4)]
    units += [_unit("b", i, rng) for i in range(3)]
    units += [_unit("c", 0, rng)]  # too few to enrol: an impostor probe only
    genuine, impostor, _ = attempt_scores(units, templates=2)
    expected_genuine: list[float] = []
    expected_impostor: list[float] = []
    people = {"a": units[:4], "b": units[4:7], "c": units[7:]}
    for r in range(4):  # the largest person has 4 units
        gallery = {
            p: [(r + j) % len(own) for j in range(2)] for p, own in people.items() if len(own) > 2
        }
        for person, own in people.items():
            for i, unit in enumerate(own):
                for other, chosen in gallery.items():
                    best = max(float(people[other][t].embedding @ unit.embedding) for t in chosen)
                    if other != person:
                        expected_impostor.append(best)
                    elif i not in chosen:
                        expected_genuine.append(best)
    assert sorted(genuine) == pytest.approx(sorted(expected_genuine))
    assert sorted(impostor) == pytest.approx(sorted(expected_impostor))
    assert genuine.size == 4 * 2 + 4 * 1  # a: 2 probes per rotation; b: 1
    record = set_attempts(units, templates=2)
    # 36 impostor attempts cannot support any reported FMR: every rate is null, not 0.
    assert record["impostor_attempts"] == impostor.size
    assert record["fnmr_at_fmr"] == {"1e-2": None, "1e-3": None, "1e-4": None}
    assert record["supported"] == {"1e-2": False, "1e-3": False, "1e-4": False}


def test_more_templates_never_lower_a_genuine_score() -> None:
    # Best-of-K template fusion: with the same probe, K+1 templates score at least as high.
    rng = np.random.default_rng(1)
    units = [_unit(p, i, rng) for p in "abc" for i in range(6)]
    one = set_attempts(units, 1)
    three = set_attempts(units, 3)
    assert one["genuine_attempts"] > three["genuine_attempts"] > 0
    assert np.median(attempt_scores(units, 3)[0]) >= np.median(attempt_scores(units, 1)[0])


def test_a_sequence_folder_is_one_probe_of_fused_frames(tmp_path: Path) -> None:
    root = tmp_path / "set"
    paths = [root / "p" / "0.png", root / "p" / "clip" / "0.png", root / "p" / "clip" / "1.png"]
    vectors = np.eye(3, dtype=np.float32)
    embedded = EmbeddedSet("set", vectors, ["p", "p", "p"], paths, 3)
    units = units_of(embedded, root)
    assert [u.key for u in units] == ["p/0.png", "p/clip"]
    fused = units[1].embedding
    assert fused == pytest.approx(np.array([0, 1, 1], np.float32) / np.sqrt(2))


@pytest.fixture
def pack(default_pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "jifang-open"
    shutil.copytree(default_pack, target)
    return target


def _run(*args: str):  # noqa: ANN202 - click Result
    return CliRunner().invoke(app, ["eval", "attempts", *args])


def test_cli_scores_real_photos_with_sequences(pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    # One more probe of the astronaut as a sequence of two frames.
    clip = data / "astronaut" / "clip"
    clip.mkdir()
    for i, src in enumerate(sorted((data / "astronaut").glob("*.png"))[:2]):
        cv2.imwrite(str(clip / f"{i}.png"), cv2.imread(str(src)))
    out = tmp_path / "attempts.json"
    result = _run("--pack", str(pack), "--data", str(data), "--templates", "2", "--json", str(out))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    record = doc["sets"]["tiny"]
    assert set(record) >= {
        "templates",
        "fnmr_at_fmr",
        "genuine_attempts",
        "impostor_attempts",
        "supported",
    }
    assert record["templates"] == 2 and record["units"] == 9  # 4 + 4 images + 1 sequence
    # astronaut: 5 units, 5 rotations x 3 probes; cameraman: 4 units, 5 rotations x 2.
    assert record["genuine_attempts"] == 5 * 3 + 5 * 2
    assert record["impostor_attempts"] == 5 * 9
    assert record["fnmr_at_fmr"]["1e-3"] is None  # 45 impostor attempts support none
    assert "tiny" in result.output


def test_cli_refuses_sets_without_a_genuine_attempt(pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    out = tmp_path / "attempts.json"
    result = _run("--pack", str(pack), "--data", str(data), "--templates", "4", "--json", str(out))
    assert result.exit_code == 1
    assert "no person has more than 4" in result.output and not out.exists()
    result = _run("--pack", str(pack), "--data", str(tmp_path / "missing"))
    assert result.exit_code == 1 and "missing: not a folder" in result.output


def test_cli_adds_strangers_attempting_every_enrolled_person(pack: Path, tmp_path: Path) -> None:
    data = faces.write_set(tmp_path / "data" / "tiny")
    strangers = tmp_path / "strangers" / "walk_ins"
    for i, image in enumerate(faces.variants(faces.cameraman())[:3]):
        (strangers / f"s{i}").mkdir(parents=True)
        cv2.imwrite(str(strangers / f"s{i}" / "0.png"), image)
    out = tmp_path / "attempts.json"
    args = ["--pack", str(pack), "--data", str(data), "--templates", "2", "--json", str(out)]
    result = _run(*args, "--strangers", str(strangers))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())["sets"]["tiny"]
    # 4 rotations (the most units anyone has) x 2 enrolled people x 3 strangers.
    assert record["stranger_attempts"] == 4 * 2 * 3
    assert (
        set(record["stranger_fmr"]) == set(record["fnmr_at_fmr_both"]) == {"1e-2", "1e-3", "1e-4"}
    )
    assert "strangers: FMR" in result.output
    missing = tmp_path / "nobody"
    out.unlink()
    result = _run(*args, "--strangers", str(missing))
    assert result.exit_code == 1 and "nobody" in result.output and not out.exists()
