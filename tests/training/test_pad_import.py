"""import-pad: MiniFASNet state dicts -> a fused ONNX PAD component that reproduces torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from models.manifest import verify_pack
from models.types import Task

torch = pytest.importorskip("torch")

from jifang.cli import app  # noqa: E402
from training.common import TrainingError  # noqa: E402
from training.nets.minifasnet import Bottleneck, MiniFASNet, Stack  # noqa: E402
from training.pad_import import (  # noqa: E402
    INPUT_NAME,
    MODELS,
    OUTPUT_NAME,
    FusedPad,
    import_pad,
    load_weights,
    parity_crops,
)


def _random_net(seed: int, squeeze: bool) -> MiniFASNet:
    """A small MiniFASNet of the real layout with random weights and batch-norm statistics."""
    torch.manual_seed(seed)

    def stack(width: int, hidden: int, count: int) -> Stack:
        blocks = [Bottleneck(width, hidden, width, 1, None) for _ in range(count - 1)]
        blocks.append(Bottleneck(width, hidden, width, 1, width // 4 if squeeze else None))
        return Stack(blocks)

    stages = {
        "conv_23": Bottleneck(32, 40, 64, 2, None),
        "conv_3": stack(64, 24, 2),
        "conv_34": Bottleneck(64, 96, 128, 2, None),
        "conv_4": stack(128, 32, 2),
        "conv_45": Bottleneck(128, 96, 128, 2, None),
        "conv_5": stack(128, 32, 2),
    }
    net = MiniFASNet(stages, embedding=128, classes=3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.0, 0.5)
    return net.eval()


def _write_weights(folder: Path) -> list[MiniFASNet]:
    folder.mkdir(parents=True, exist_ok=True)
    nets = []
    for i, (name, _) in enumerate(MODELS):
        net = _random_net(seed=i, squeeze=i == 1)
        # Training with DataParallel leaves a `module.` prefix; the real files have it.
        torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, folder / name)
        nets.append(net)
    return nets


def test_imported_pack_reproduces_torch(tmp_path: Path, default_pack: Path) -> None:
    nets = _write_weights(tmp_path / "weights")
    result = import_pad(default_pack, tmp_path / "weights", tmp_path / "packs" / "with-pad")
    manifest = verify_pack(result.pack_dir)
    entry = manifest.file(Task.LIVENESS)
    assert entry is not None and entry.wrapper == "pad_onnx" and entry.license == "Apache-2.0"
    assert entry.commercial_use and "Silent-Face-Anti-Spoofing" in entry.source
    assert entry.params["crop_scales"] == [2.7, 4.0] and entry.params["live_threshold"] == 0.5
    session = ort.InferenceSession(
        str(result.pack_dir / entry.path), providers=["CPUExecutionProvider"]
    )
    crops = parity_crops(6, 2, seed=42)
    (onnx_live,) = session.run([OUTPUT_NAME], {INPUT_NAME: crops})
    with torch.no_grad():
        torch_live = FusedPad(nets)(torch.from_numpy(crops)).numpy()
    assert np.max(np.abs(onnx_live - torch_live)) <= 1e-4
    assert onnx_live.shape == (9,) and np.all((onnx_live >= 0) & (onnx_live <= 1))


def test_the_edge_wrapper_scores_a_face_with_the_imported_model(
    tmp_path: Path, default_pack: Path, astronaut_bgr: np.ndarray
) -> None:
    from models.engine import FaceEngine
    from models.liveness.onnx_pad import load_pad

    _write_weights(tmp_path / "weights")
    result = import_pad(default_pack, tmp_path / "weights", tmp_path / "with-pad")
    engine = FaceEngine(result.pack_dir, threads=1)
    pad = load_pad(result.pack_dir, engine.manifest, 1)
    assert pad is not None
    box = engine.detect(astronaut_bgr)[0].detection.box
    crop = pad.crop(astronaut_bgr, box)
    assert crop.shape == (80, 80, 6)  # both crop scales stacked
    score = pad.score(astronaut_bgr, [box])
    assert score.shape == (1,) and 0.0 <= float(score[0]) <= 1.0


def test_missing_and_wrong_weights_are_refused_and_nothing_is_written(
    tmp_path: Path, default_pack: Path
) -> None:
    out = tmp_path / "never"
    with pytest.raises(TrainingError, match=r"2\.7_80x80_MiniFASNetV2\.pth: weight file not found"):
        import_pad(default_pack, tmp_path / "empty", out)
    assert not out.exists()
    weights = tmp_path / "weights"
    _write_weights(weights)
    torch.save({"module.conv1.conv.weight": torch.zeros(32, 3, 3, 3)}, weights / MODELS[1][0])
    with pytest.raises(TrainingError, match="4_0_0_80x80_MiniFASNetV1SE.pth: not a MiniFASNet"):
        import_pad(default_pack, weights, out)
    (weights / MODELS[0][0]).write_bytes(b"not a pickle")
    with pytest.raises(TrainingError, match="not a PyTorch state dict"):
        load_weights(weights / MODELS[0][0])
    assert not out.exists()
    assert not any(p.name.startswith(".never") for p in tmp_path.iterdir())


def test_cli_writes_the_pack_into_the_model_dir(tmp_path: Path, default_pack: Path) -> None:
    _write_weights(tmp_path / "weights")
    runner = CliRunner()
    args = [
        "models",
        "import-pad",
        "--pack",
        str(default_pack),
        "--weights",
        str(tmp_path / "weights"),
        "--out",
        "site-pad",
        "--model-dir",
        str(tmp_path / "md"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert verify_pack(tmp_path / "md" / "site-pad").name == "site-pad"
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "exists" in again.output


def test_the_supplied_minifasnet_files_import(
    tmp_path: Path, default_pack: Path, shared_dir: Path
) -> None:
    weights = shared_dir / "models" / "minifasnet"
    if not weights.is_dir():
        pytest.skip("shared MiniFASNet weights not present")
    result = import_pad(default_pack, weights, tmp_path / "real-pad")
    assert result.max_abs_diff <= 1e-4
