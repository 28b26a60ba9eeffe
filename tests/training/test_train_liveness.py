"""Liveness training: a few steps on generated live/spoof crops, the pack, its ONNX contract."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from models.manifest import load_manifest, verify_pack
from models.types import Task

torch = pytest.importorskip("torch")

from training import liveness  # noqa: E402
from training.common import NonFiniteLossError, TrainingError  # noqa: E402
from training.nets.liveness import INPUT_NAME, OUTPUT_NAME  # noqa: E402


def _generated(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """Live: smooth (blurred) crops; spoof: high-frequency texture, as moiré or print dots."""
    rng = np.random.default_rng(seed)
    for folder in ("live", "spoof_print"):
        (root / folder).mkdir(parents=True)
    for i in range(per_class):
        noise = rng.integers(0, 256, (96, 80, 3)).astype(np.uint8)
        cv2.imwrite(str(root / "live" / f"{i}.png"), cv2.GaussianBlur(noise, (11, 11), 4))
        cv2.imwrite(str(root / "spoof_print" / f"{i}.png"), noise)
    return root


def _args(data: Path, out: Path, base: Path, *extra: str):  # noqa: ANN202
    return liveness.parse(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--base-pack",
            str(base),
            "--batch-size",
            "8",
            "--epochs",
            "2",
            "--input-size",
            "48",
            "--no-progress",
            *extra,
        ]
    )


def test_trains_and_exports_a_pack_with_a_runnable_liveness_model(
    tmp_path: Path, default_pack: Path
) -> None:
    from models.engine import FaceEngine

    data = _generated(tmp_path / "live_spoof")
    out = tmp_path / "pad-pack"
    result = liveness.main(_args(data, out, default_pack))

    run = tmp_path / "pad-pack.run"
    assert json.loads((run / "args.json").read_text())["input_size"] == 48
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(0.0 <= e["val"]["accuracy"] <= 1.0 for e in epochs)
    assert result["export_check"]["max_abs_diff"] <= liveness.EXPORT_MAX_DIFF

    manifest = verify_pack(out)
    base = load_manifest(default_pack)
    entry = manifest.file(Task.LIVENESS)
    assert entry is not None and entry.optional and entry.wrapper == liveness.LIVENESS_WRAPPER
    assert entry.params["input_size"] == 48
    # The recognizer is untouched: same contract, the edge's engine still loads the pack.
    assert manifest.contract_id == base.contract_id
    FaceEngine(out, threads=1)

    session = ort.InferenceSession(str(out / entry.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == INPUT_NAME and inp.shape[1:] == [3, 48, 48]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    live, spoof = (
        cv2.cvtColor(np.asarray(cv2.imread(str(data / p / "0.png"))), cv2.COLOR_BGR2RGB)
        for p in ("live", "spoof_print")
    )
    crops = np.stack(
        [cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA) for img in (live, spoof)]
    )
    (probs,) = session.run(
        [OUTPUT_NAME], {INPUT_NAME: crops.transpose(0, 3, 1, 2).astype(np.float32)}
    )
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))

    # The edge's PAD wrapper, chosen by the manifest, reproduces the same probabilities.
    from models.liveness.onnx_pad import OnnxPad
    from models.runtime.registry import build_component

    pad = build_component(out, entry, threads=1, expect=OnnxPad)
    via_wrapper = pad.score_crops(crops)
    assert np.allclose(via_wrapper, probs, atol=1e-5)


def test_resume_continues_from_the_checkpoint(tmp_path: Path, default_pack: Path) -> None:
    data = _generated(tmp_path / "d")
    out = tmp_path / "p"
    liveness.main(_args(data, out, default_pack, "--epochs", "1"))
    checkpoint = tmp_path / "p.run" / "checkpoint.pth"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 0
    result = liveness.main(
        _args(data, out, default_pack, "--epochs", "3", "--resume", str(checkpoint), "--force")
    )
    assert [e["epoch"] for e in result["epochs"]] == [0, 1, 2]
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2


def test_non_finite_loss_stops_training(tmp_path: Path, default_pack: Path) -> None:
    data = _generated(tmp_path / "d")
    out = tmp_path / "p"
    # An absurd learning rate overflows the weights after the first step.
    with pytest.raises(NonFiniteLossError, match="loss is (nan|inf) at epoch 0 step"):
        liveness.main(_args(data, out, default_pack, "--lr", "1e30", "--epochs", "3"))
    assert not out.exists()


def test_folders_without_both_classes_are_rejected(tmp_path: Path, default_pack: Path) -> None:
    data = tmp_path / "d"
    (data / "live").mkdir(parents=True)
    cv2.imwrite(str(data / "live" / "0.png"), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(TrainingError, match=r"no 'spoof\*/' folder"):
        liveness.main(_args(data, tmp_path / "p", default_pack))
    empty = tmp_path / "empty"
    (empty / "photos").mkdir(parents=True)
    with pytest.raises(TrainingError, match="no 'live/' folder"):
        liveness.main(_args(empty, tmp_path / "p", default_pack))
    assert not (tmp_path / "p").exists()
