"""`jifang calibrate liveness`: the two PAD bands, checked by brute force and end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.liveness_calibrate import choose_bands
from calibration.liveness_eval import Presentation


def _items(rng: np.random.Generator) -> list[Presentation]:
    out = []
    for label, n, centre in (
        ("live", 40, 0.7),
        ("spoof_print", 25, 0.3),
        ("spoof_replay", 30, 0.4),
    ):
        scores = np.clip(rng.normal(centre, 0.2, n), 0, 1).round(2)  # ties on purpose
        out += [
            Presentation(Path(f"{label}{i}"), label, float(s), 1, 1) for i, s in enumerate(scores)
        ]
    out.append(Presentation(Path("live-noface"), "live", 0.99, 1, 0))  # no face: always rejected
    return out


def _apcer_ok(items: list[Presentation], t: float, max_apcer: float) -> bool:
    for label in ("spoof_print", "spoof_replay"):
        group = [p for p in items if p.label == label]
        if sum(p.faces > 0 and p.score >= t for p in group) > max_apcer * len(group) + 1e-9:
            return False
    return True


def _below(items: list[Presentation], t: float) -> float:
    live = [p for p in items if p.label == "live"]
    return sum(p.faces == 0 or p.score < t for p in live) / len(live)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("max_apcer", "max_bpcer"), [(0.05, 0.02), (0.0, 0.0), (0.2, 0.1)])
def test_bands_are_the_brute_force_extremes(seed: int, max_apcer: float, max_bpcer: float) -> None:
    items = _items(np.random.default_rng(seed))
    bands = choose_bands(items, max_apcer, max_bpcer)
    scores = sorted({p.score for p in items} | {0.0, 1.0})
    candidates = sorted({*scores, *(math.nextafter(s, 2.0) for s in scores)})
    live_ok = [t for t in candidates if _apcer_ok(items, t, max_apcer)]
    assert bands.live_threshold == pytest.approx(min(live_ok), abs=1e-12)
    assert _apcer_ok(items, bands.live_threshold, max_apcer)
    spoof_ok = [
        t for t in candidates if t <= bands.live_threshold and _below(items, t) <= max_bpcer + 1e-9
    ]
    assert bands.spoof_threshold == max(spoof_ok, default=0.0)
    doc = bands.document
    assert doc["bpcer"] == _below(items, bands.live_threshold)
    assert doc["bpcer_refused"] == _below(items, bands.spoof_threshold)
    assert 0.0 <= doc["bona_fide_challenge_rate"] <= doc["bpcer"]


def test_missing_classes_are_errors_and_thin_data_is_a_warning() -> None:
    live = [Presentation(Path("a"), "live", 0.9, 1, 1)]
    attack = [Presentation(Path("b"), "spoof_print", 0.1, 1, 1)]
    with pytest.raises(ValueError, match="no attack presentations"):
        choose_bands(live, 0.05, 0.02)
    with pytest.raises(ValueError, match="no live presentations"):
        choose_bands(attack, 0.05, 0.02)
    warned = choose_bands(live + attack, 0.05, 0.02).warnings
    assert any("cannot support APCER 0.05" in w for w in warned)
    assert any("spoof_replay: no presentations" in w for w in warned)


def test_cli_writes_bands_that_eval_and_the_policy_then_use(
    tmp_path: Path, default_pack: Path, astronaut_bgr: np.ndarray
) -> None:
    pytest.importorskip("torch")
    from jifang.cli import app
    from models.engine import FaceEngine
    from models.liveness import LivenessPolicyConfig, passive_scorer_for
    from models.manifest import load_calibration
    from tests.training.test_pad_import import _write_weights
    from training.pad_import import import_pad

    _write_weights(tmp_path / "weights")
    pack = tmp_path / "md" / "with-pad"
    import_pad(default_pack, tmp_path / "weights", pack)
    data = tmp_path / "data"
    for folder in ("live", "spoof_print", "spoof_replay"):
        (data / folder).mkdir(parents=True)
    h, w = astronaut_bgr.shape[:2]
    for i, gain in enumerate((1.0, 0.8, 0.6)):
        image = np.clip(astronaut_bgr * gain, 0, 255).astype(np.uint8)
        cv2.imwrite(str(data / "live" / f"face{i}.png"), image)
        cv2.imwrite(str(data / "spoof_print" / f"p{i}.png"), cv2.resize(image, (w // 2, h // 2)))
        cv2.imwrite(str(data / "spoof_replay" / f"r{i}.png"), cv2.GaussianBlur(image, (9, 9), 3))
    runner = CliRunner()
    base = ["--pack", "with-pad", "--model-dir", str(tmp_path / "md"), "--data", str(data)]
    report = tmp_path / "bands.json"
    run = runner.invoke(
        app, ["calibrate", "liveness", *base, "--max-apcer", "0", "--json", str(report)]
    )
    assert run.exit_code == 0, run.output
    doc = json.loads(report.read_text())
    assert doc["apcer"] == {"print": 0.0, "replay": 0.0}
    record = load_calibration(pack).pad["pad"]
    assert record.live_threshold == doc["live_threshold"]
    assert record.spoof_threshold == doc["spoof_threshold"] <= record.live_threshold
    # eval liveness now rates at the calibrated live band ...
    out = tmp_path / "eval.json"
    run = runner.invoke(app, ["eval", "liveness", *base, "--json", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(out.read_text())["threshold"] == record.live_threshold
    # ... and so does the gate's policy.
    scorer = passive_scorer_for(FaceEngine(pack, threads=1), LivenessPolicyConfig())
    assert scorer.thresholds.source == "calibration pad"
    assert scorer.thresholds.live == record.live_threshold


def test_cli_without_attacks_fails_and_writes_nothing(
    tmp_path: Path, default_pack: Path, astronaut_bgr: np.ndarray
) -> None:
    pytest.importorskip("torch")
    from jifang.cli import app
    from tests.training.test_pad_import import _write_weights
    from training.pad_import import import_pad

    _write_weights(tmp_path / "weights")
    pack = tmp_path / "md" / "with-pad"
    import_pad(default_pack, tmp_path / "weights", pack)
    before = sorted((p.name, p.read_bytes()) for p in pack.iterdir())
    (tmp_path / "data" / "live").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "data" / "live" / "face.png"), astronaut_bgr)
    run = CliRunner().invoke(
        app,
        ["calibrate", "liveness", "--pack", str(pack), "--data", str(tmp_path / "data")],
    )
    assert run.exit_code == 1 and "no attack presentations" in run.output
    assert sorted((p.name, p.read_bytes()) for p in pack.iterdir()) == before
