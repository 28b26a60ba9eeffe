"""Recognizer fine-tuning: the torch backbone, a few training steps, the exported pack."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from models.manifest import load_manifest
from models.types import Task
from tests.models.faces import astronaut, cameraman, variants, write_set

torch = pytest.importorskip("torch")

from training import recognizer  # noqa: E402
from training.common import NonFiniteLossError, TrainingError  # noqa: E402
from training.nets.dlib_resnet import DlibResNet  # noqa: E402
from training.packs import dlib_net_from_pack  # noqa: E402


def _real_chips(engine) -> np.ndarray:  # noqa: ANN001 - FaceEngine
    chips = []
    for photo in [*variants(astronaut()), *variants(cameraman())]:
        acquired = engine.acquire(photo)
        assert acquired is not None
        chips.append(engine.align(acquired.image, acquired.face))
    return np.stack(chips)


def _generated_people(root: Path, count: int, per_person: int = 4, seed: int = 0) -> None:
    """Synthetic 'identities': a smooth random pattern each, with per-image noise and shift."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = cv2.resize(
            rng.integers(0, 256, (8, 8, 3)).astype(np.uint8),
            (150, 150),
            interpolation=cv2.INTER_CUBIC,
        )
        folder = root / f"person{i}"
        folder.mkdir(parents=True)
        for j in range(per_person):
            noisy = base.astype(np.int16) + rng.integers(-25, 26, base.shape)
            image = np.roll(np.clip(noisy, 0, 255).astype(np.uint8), j * 2, axis=1)
            cv2.imwrite(str(folder / f"{j}.png"), image)


def _args(data: Path, out: Path, base: Path, *extra: str):  # noqa: ANN202
    return recognizer.parse(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--base-pack",
            str(base),
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--epochs",
            "1",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def backbone(default_pack: Path) -> DlibResNet:
    return DlibResNet(dlib_net_from_pack(default_pack)).eval()


@pytest.mark.slow
def test_backbone_reproduces_pack_and_dlib_descriptors_on_real_chips(engine, backbone) -> None:
    chips = _real_chips(engine)
    onnx_out = engine.recognizer.embed_chips(chips)
    with torch.no_grad():
        torch_out = backbone(torch.from_numpy(chips.transpose(0, 3, 1, 2)).float()).numpy()
    assert np.abs(torch_out - onnx_out).max() < 1e-4
    dlib = pytest.importorskip("dlib")
    models = importlib.resources.files("face_recognition_models") / "models"
    reference = dlib.face_recognition_model_v1(
        str(models / "dlib_face_recognition_resnet_model_v1.dat")
    )
    want = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
    # dlib's own forward pass in float32 differs from any other by rounding only.
    assert np.abs(torch_out - want).max() < 1e-3


def test_backbone_round_trips_its_weights(backbone) -> None:
    net = backbone.to_dlib_net()
    again = DlibResNet(net).eval()
    x = torch.rand(2, 3, 150, 150) * 255
    with torch.no_grad():
        assert torch.equal(backbone(x), again(x))


@pytest.mark.slow
def test_fine_tune_exports_a_pack_the_edge_loads(tmp_path: Path, default_pack: Path) -> None:
    from models.engine import FaceEngine

    data = tmp_path / "faces"
    write_set(data)
    _generated_people(data, 4)
    out = tmp_path / "site-pack"
    args = _args(data, out, default_pack, "--val-fraction", "0.34", "--epochs", "2")
    result = recognizer.main(args)

    run = tmp_path / "site-pack.run"
    resolved = json.loads((run / "args.json").read_text())
    assert resolved["epochs"] == 2 and resolved["base_pack"] == str(default_pack)
    epochs = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(np.isfinite(e["loss"]) and e["steps"] == 2 for e in epochs)
    split = json.loads((run / "split.json").read_text())
    held_out = set(split["val"]["faces"])
    assert len(held_out) == 2 and held_out.isdisjoint(split["train"]["faces"])
    # Verification on held-out identities, every epoch and before training.
    for record in [result["baseline"], *(e["val"] for e in epochs)]:
        assert record["faces"]["identities"] == 2
        assert record["faces"]["genuine_pairs"] > 0 and record["faces"]["impostor_pairs"] > 0
        assert 0.0 <= record["faces"]["eer"] <= 1.0
    assert result["export_check"]["min_cosine"] >= recognizer.EXPORT_MIN_COSINE
    assert result["export_check"]["chips"] >= 2  # held-out chips plus the skimage photos

    base = load_manifest(default_pack)
    manifest = load_manifest(out)
    assert manifest.contract_id != base.contract_id
    new_rec, old_rec = manifest.file(Task.RECOGNIZER), base.file(Task.RECOGNIZER)
    assert new_rec is not None and old_rec is not None
    assert new_rec.wrapper == "dlib_resnet" and new_rec.sha256 != old_rec.sha256
    assert manifest.file(Task.DETECTOR) == base.file(Task.DETECTOR)
    assert not manifest.commercial_use  # site data: unknown terms until stated
    assert not (out / "calibration.yaml").exists()  # base thresholds do not fit new weights

    engine = FaceEngine(out, threads=2)
    acquired = engine.acquire(astronaut())
    assert acquired is not None and acquired.method == "detected"
    vector = engine.embed(acquired.image, acquired.face)
    assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    # The exported graph is the trained torch model.
    trained = DlibResNet(dlib_net_from_pack(out)).eval()
    chip = engine.align(acquired.image, acquired.face)
    with torch.no_grad():
        raw = trained(torch.from_numpy(chip[None].transpose(0, 3, 1, 2)).float()).numpy()[0]
    assert float(np.dot(raw / np.linalg.norm(raw), vector)) > 0.9999


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tmp_path: Path, default_pack: Path) -> None:
    data = tmp_path / "chips"
    _generated_people(data, 5)
    out = tmp_path / "pack"
    recognizer.main(_args(data, out, default_pack, "--aligned", "--val-fraction", "0.4"))
    checkpoint = tmp_path / "pack.run" / "checkpoint.pth"
    state = torch.load(checkpoint, weights_only=True)
    assert set(state) >= {"model", "optimizer", "lr_scheduler", "epoch", "args"}
    assert state["epoch"] == 0

    args = _args(
        data,
        out,
        default_pack,
        "--aligned",
        "--val-fraction",
        "0.4",
        "--epochs",
        "2",
        "--resume",
        str(checkpoint),
        "--force",
    )
    result = recognizer.main(args)
    assert [e["epoch"] for e in result["epochs"]] == [0, 1]  # epoch 0 not trained again
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    # The resumed run started from the checkpoint's lr schedule, not from --lr.
    assert result["epochs"][1]["lr"] < result["epochs"][0]["lr"]

    other = tmp_path / "other"
    _generated_people(other, 5, seed=1)
    (other / "person0").rename(other / "someone_else")
    args = _args(
        other,
        out,
        default_pack,
        "--aligned",
        "--val-fraction",
        "0.4",
        "--epochs",
        "3",
        "--resume",
        str(checkpoint),
        "--force",
    )
    with pytest.raises(TrainingError, match="trained on other identities"):
        recognizer.main(args)


@pytest.mark.slow
def test_non_finite_loss_stops_training_and_writes_no_pack(
    tmp_path: Path, default_pack: Path
) -> None:
    data = tmp_path / "chips"
    _generated_people(data, 4)
    out = tmp_path / "pack"
    # A logit scale beyond float32 turns the logits into inf - inf = NaN on the first step.
    args = _args(data, out, default_pack, "--aligned", "--val-fraction", "0", "--scale", "1e39")
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 0 step 0"):
        recognizer.main(args)
    assert not out.exists()
    assert not (tmp_path / "pack.run" / "checkpoint.pth").exists()


def test_bad_input_is_a_clear_error(tmp_path: Path, default_pack: Path) -> None:
    with pytest.raises(TrainingError, match="--data .*missing: not a folder"):
        recognizer.main(_args(tmp_path / "missing", tmp_path / "p", default_pack))
    one = tmp_path / "one"
    _generated_people(one, 1)
    with pytest.raises(TrainingError, match="1 training identities, need 2"):
        recognizer.main(
            _args(one, tmp_path / "p", default_pack, "--aligned", "--val-fraction", "0")
        )
    with pytest.raises(TrainingError, match="--lr must be positive"):
        recognizer.main(_args(one, tmp_path / "p", default_pack, "--lr", "0"))
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    two = tmp_path / "two"
    _generated_people(two, 3)
    with pytest.raises(TrainingError, match="exists .*--force"):
        recognizer.main(_args(two, existing, default_pack, "--aligned", "--val-fraction", "0"))
    assert (existing / "keep.txt").read_text() == "x"
    assert not list(tmp_path.glob(".exists.build-*"))


def test_a_bad_pack_name_is_refused_before_training(tmp_path: Path, default_pack: Path) -> None:
    data = tmp_path / "chips"
    _generated_people(data, 3)
    with pytest.raises(TrainingError, match="pack name 'Site Pack'"):
        recognizer.main(_args(data, tmp_path / "Site Pack", default_pack, "--aligned"))
    assert not (tmp_path / "Site Pack.run").exists()


@pytest.mark.slow
def test_a_failed_export_check_writes_no_pack(
    tmp_path: Path, default_pack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from models.convert.dlib_resnet import FcLayer, build_onnx

    def skewed_build(net):  # noqa: ANN001, ANN202 - an exporter that loses the fc weights
        nodes = [
            dataclasses.replace(
                n, layer=dataclasses.replace(n.layer, weights=n.layer.weights[::-1].copy())
            )
            if isinstance(n.layer, FcLayer)
            else n
            for n in net.nodes
        ]
        return build_onnx(dataclasses.replace(net, nodes=tuple(nodes)))

    monkeypatch.setattr(recognizer, "build_onnx", skewed_build)
    data = tmp_path / "chips"
    _generated_people(data, 3)
    out = tmp_path / "pack"
    with pytest.raises(TrainingError, match="export check failed: .* pack not written"):
        recognizer.main(_args(data, out, default_pack, "--aligned", "--val-fraction", "0"))
    assert not out.exists() and not list(tmp_path.glob(".pack.build-*"))
    assert (
        json.loads((tmp_path / "pack.run" / "export_check.json").read_text())["min_cosine"] < 0.9999
    )


def test_a_pack_without_a_dlib_recognizer_cannot_be_a_base(
    tmp_path: Path, default_pack: Path
) -> None:
    import shutil

    fake = tmp_path / "other"
    shutil.copytree(default_pack, fake)
    manifest = yaml.safe_load((fake / "manifest.yaml").read_text())
    for entry in manifest["files"]:
        if entry["task"] == "recognizer":
            entry["wrapper"] = "insightface_arcface"
    from models.manifest import EmbeddingSpec, FileEntry, compute_contract_id

    files = [FileEntry.model_validate(f) for f in manifest["files"]]
    manifest["contract_id"] = compute_contract_id(
        files, EmbeddingSpec.model_validate(manifest["embedding"])
    )
    (fake / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(TrainingError, match="fine-tuning starts from a 'dlib_resnet'"):
        dlib_net_from_pack(fake)
