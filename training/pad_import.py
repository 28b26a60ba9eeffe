"""`jifang models import-pad`: user-supplied MiniFASNet weights -> a PAD component of a pack.

The two 80x80 Silent-Face-Anti-Spoofing models (V2 on the face box scaled 2.7x, V1SE on it
scaled 4.0x) become ONE ONNX graph: its input stacks both crops on the channel axis, and its
output is the mean of the two live-class probabilities, as the models' design fuses them.
The graph is written node by node with batch norms folded, then scored against torch on
random and structured crops; the pack is written only when they agree within 1e-4.

torch is needed here only: the edge loads the ONNX file with onnxruntime.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.manifest import (
    CALIBRATION_NAME,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    verify_pack,
    write_manifest,
)
from models.store import verified_manifest
from models.types import Task
from training.common import TrainingError
from training.nets.minifasnet import (
    INPUT_SIZE,
    LIVE_INDEX,
    Bottleneck,
    ConvUnit,
    MiniFASNet,
    Squeeze,
    Stack,
)
from training.packs import copy_files, staged_pack

logger = logging.getLogger(__name__)

PAD_FILE = "pad_minifasnet.onnx"
INPUT_NAME = "crops"
OUTPUT_NAME = "live"
OPSET = 17
IR_VERSION = 8
PARITY_MAX_DIFF = 1e-4
LICENSE = "Apache-2.0"
SOURCE_REPO = "minivision-ai/Silent-Face-Anti-Spoofing"
# The weight files and the face-box scale each model was trained on, in the graph's order.
MODELS: tuple[tuple[str, float], ...] = (
    ("2.7_80x80_MiniFASNetV2.pth", 2.7),
    ("4_0_0_80x80_MiniFASNetV1SE.pth", 4.0),
)
# The fused live probability at which a frame counts as live: the models' own decision rule
# (live is the most likely of three classes once it holds half the mass), not fitted here;
# `jifang calibrate liveness` moves it on a site's clips.
DEFAULT_LIVE_THRESHOLD = 0.5
# Below this the gate refuses without asking for the challenge; between the two it asks. The
# band only decides who is asked (an attack in it still has to answer a random prompt), so
# the uncalibrated default is wide: the live point's lower half is doubt, not refusal.
DEFAULT_SPOOF_THRESHOLD = 0.2


@dataclass(frozen=True)
class ImportedPad:
    """What import-pad wrote: the pack folder, the component and the parity it measured."""

    pack_dir: Path
    file: str
    max_abs_diff: float
    checked_crops: int


def load_weights(path: Path) -> MiniFASNet:
    """One MiniFASNet from a PyTorch state dict file; errors name the file."""
    if not path.is_file():
        raise TrainingError(f"{path}: weight file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise TrainingError(f"{path}: not a PyTorch state dict ({err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainingError(f"{path}: not a state dict of tensors")
    try:
        return MiniFASNet.from_state_dict(state)
    except (ValueError, RuntimeError, KeyError) as err:
        raise TrainingError(f"{path}: not a MiniFASNet state dict ({err})") from err


class FusedPad(nn.Module):
    """The torch reference of the exported graph: RGB [0,1] crops of both scales -> live."""

    def __init__(self, nets: list[MiniFASNet]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        probs = []
        for i, net in enumerate(self.nets):
            rgb = crops[:, 3 * i : 3 * i + 3]
            # The models were trained on OpenCV BGR images with pixels 0..255.
            bgr = rgb.flip(1) * 255.0
            probs.append(torch.softmax(net(bgr), dim=1)[:, LIVE_INDEX])
        return torch.stack(probs, dim=0).mean(dim=0)


class _Graph:
    """Collects ONNX nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        # np.ascontiguousarray would turn a 0-d scalar into shape (1,).
        array = value if value.ndim == 0 else np.ascontiguousarray(value)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with the eval-mode batch norm folded in (float64 math)."""
    if bn.running_mean is None or bn.running_var is None:
        raise TrainingError("batch norm without running statistics cannot be folded")
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = bn.bias.detach().double() - bn.running_mean.double() * scale
    return (
        (w * scale.view(-1, 1, 1, 1)).numpy().astype(np.float32),
        bias.numpy().astype(np.float32),
    )


def _unit(g: _Graph, unit: ConvUnit, x: str, name: str, first: bool = False) -> str:
    weight, bias = _fold(unit.conv, unit.bn)
    if first:
        # RGB [0,1] in, BGR 0..255 expected: reorder the input channels and scale the weights.
        weight = np.ascontiguousarray(weight[:, ::-1] * 255.0, np.float32)
    conv = unit.conv
    pad = int(conv.padding[0]) if isinstance(conv.padding, tuple) else 0
    x = g.op(
        "Conv",
        [x, g.const(f"{name}_w", weight), g.const(f"{name}_b", bias)],
        f"{name}_conv",
        kernel_shape=list(conv.kernel_size),
        strides=list(conv.stride),
        pads=[pad] * 4,
        group=conv.groups,
    )
    if isinstance(unit.prelu, nn.PReLU):
        slope = unit.prelu.weight.detach().numpy().astype(np.float32).reshape(-1, 1, 1)
        x = g.op("PRelu", [x, g.const(f"{name}_slope", slope)], f"{name}_prelu")
    return x


def _squeeze(g: _Graph, se: Squeeze, x: str, name: str) -> str:
    pooled = g.op("GlobalAveragePool", [x], f"{name}_pool")
    w1, b1 = _fold(se.fc1, se.bn1)
    w2, b2 = _fold(se.fc2, se.bn2)
    h = g.op("Conv", [pooled, g.const(f"{name}_w1", w1), g.const(f"{name}_b1", b1)], f"{name}_fc1")
    h = g.op("Relu", [h], f"{name}_relu")
    h = g.op("Conv", [h, g.const(f"{name}_w2", w2), g.const(f"{name}_b2", b2)], f"{name}_fc2")
    gate = g.op("Sigmoid", [h], f"{name}_gate")
    return g.op("Mul", [x, gate], f"{name}_scaled")


def _bottleneck(g: _Graph, block: Bottleneck, x: str, name: str) -> str:
    y = _unit(g, block.conv, x, f"{name}_expand")
    y = _unit(g, block.conv_dw, y, f"{name}_dw")
    y = _unit(g, block.project, y, f"{name}_project")
    if block.se_module is not None:
        y = _squeeze(g, block.se_module, y, f"{name}_se")
    return g.op("Add", [x, y], f"{name}_sum") if block.residual else y


def _net(g: _Graph, net: MiniFASNet, x: str, name: str) -> str:
    """Live probability [N] of one network on its RGB [0,1] crop."""
    x = _unit(g, net.conv1, x, f"{name}_conv1", first=True)
    x = _unit(g, net.conv2_dw, x, f"{name}_conv2")
    for stage_name, stage in net.named_children():
        if isinstance(stage, Bottleneck):
            x = _bottleneck(g, stage, x, f"{name}_{stage_name}")
        elif isinstance(stage, Stack):
            for i, block in enumerate(stage.model):
                if not isinstance(block, Bottleneck):
                    raise TrainingError(f"{stage_name}.{i} is not a bottleneck block")
                x = _bottleneck(g, block, x, f"{name}_{stage_name}_{i}")
    x = _unit(g, net.conv_6_sep, x, f"{name}_sep")
    x = _unit(g, net.conv_6_dw, x, f"{name}_gdc")
    x = g.op("Flatten", [x], f"{name}_flat", axis=1)
    bn = net.bn
    if bn.running_mean is None or bn.running_var is None:
        raise TrainingError("embedding batch norm without running statistics")
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = (net.linear.weight.detach().double() * scale.view(-1, 1)).numpy().astype(np.float32)
    b = (bn.bias.detach().double() - bn.running_mean.double() * scale).numpy().astype(np.float32)
    x = g.op(
        "Gemm",
        [x, g.const(f"{name}_emb_w", w), g.const(f"{name}_emb_b", b)],
        f"{name}_emb",
        transB=1,
    )
    prob_w = net.prob.weight.detach().numpy().astype(np.float32)
    x = g.op("Gemm", [x, g.const(f"{name}_cls_w", prob_w)], f"{name}_logits", transB=1)
    x = g.op("Softmax", [x], f"{name}_softmax", axis=1)
    index = g.const(f"{name}_live_index", np.asarray(LIVE_INDEX, np.int64))
    return g.op("Gather", [x, index], f"{name}_live", axis=1)


def build_onnx(nets: list[MiniFASNet]) -> onnx.ModelProto:
    """crops float32 [N, 3k, 80, 80] RGB 0..1 (k crop scales) -> live float32 [N]."""
    g = _Graph()
    k = len(nets)
    parts = [f"crop{i}" for i in range(k)]
    if k > 1:
        split = g.const("split_sizes", np.asarray([3] * k, np.int64))
        g.nodes.append(helper.make_node("Split", [INPUT_NAME, split], parts, name="split", axis=1))
    else:
        parts = [INPUT_NAME]
    lives = [
        _net(g, net, part, f"m{i}") for i, (net, part) in enumerate(zip(nets, parts, strict=True))
    ]
    total = lives[0]
    for i, live in enumerate(lives[1:], start=1):
        total = g.op("Add", [total, live], f"live_sum{i}")
    g.op("Mul", [total, g.const("mean_weight", np.asarray(1.0 / k, np.float32))], OUTPUT_NAME)
    size = INPUT_SIZE
    graph = helper.make_graph(
        g.nodes,
        "jifang_minifasnet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3 * k, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jifang.training"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def parity_crops(count: int, k: int, seed: int = 0) -> np.ndarray:
    """Check inputs: uniform noise, flat grey and smooth gradients, RGB [0,1], [N,3k,80,80]."""
    rng = np.random.default_rng(seed)
    noise = rng.random((count, 3 * k, INPUT_SIZE, INPUT_SIZE))
    ramp = np.linspace(0.0, 1.0, INPUT_SIZE)[None, None, None, :]
    smooth = (
        np.broadcast_to(ramp, (2, 3 * k, INPUT_SIZE, INPUT_SIZE))
        * np.asarray([0.5, 1.0])[:, None, None, None]
    )
    grey = np.full((1, 3 * k, INPUT_SIZE, INPUT_SIZE), 0.5)
    return np.concatenate([noise, smooth, grey]).astype(np.float32)


def parity(model: onnx.ModelProto, reference: FusedPad, crops: np.ndarray) -> float:
    """Largest absolute difference between ONNX and torch live probabilities."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: crops})
    with torch.no_grad():
        torch_out = reference(torch.from_numpy(crops)).numpy()
    return float(np.max(np.abs(np.asarray(onnx_out, np.float64) - torch_out)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def import_pad(
    base_dir: Path, weights: Path, out: Path, force: bool = False, check_crops: int = 16
) -> ImportedPad:
    """Write pack `out` = base pack + the fused MiniFASNet PAD; nothing written on failure."""
    base: PackManifest = verified_manifest(base_dir)
    weight_files = [weights / name for name, _ in MODELS]
    nets = [load_weights(path) for path in weight_files]
    model = build_onnx(nets)
    reference = FusedPad(nets).eval()
    crops = parity_crops(check_crops, len(nets))
    diff = parity(model, reference, crops)
    if not diff <= PARITY_MAX_DIFF:
        raise TrainingError(
            f"ONNX and torch live probabilities differ by {diff:.2e} > {PARITY_MAX_DIFF} "
            f"on {len(crops)} crops; pack not written"
        )
    logger.info("parity ONNX vs torch: max |diff| %.2e on %d crops", diff, len(crops))
    sources = ", ".join(f"{p.name} sha256 {_sha256(p)}" for p in weight_files)
    with staged_pack(out, force) as work:
        path = work / PAD_FILE
        path.write_bytes(model.SerializeToString())
        copied = copy_files(base_dir, base, work, skip={Task.LIVENESS})
        entry = FileEntry(
            path=PAD_FILE,
            task=Task.LIVENESS,
            wrapper="pad_onnx",
            sha256=sha256_file(path),
            license=LICENSE,
            commercial_use=True,
            source=f"{SOURCE_REPO} (user-supplied weights: {sources}); converted by "
            f"jifang models import-pad, ONNX vs torch max |diff| {diff:.1e}",
            params={
                "input_size": INPUT_SIZE,
                "crop_scale": MODELS[0][1],
                "crop_scales": [scale for _, scale in MODELS],
                "crop_fit": True,
                "mean": [0.0, 0.0, 0.0],
                "std": [1.0, 1.0, 1.0],
                "output": "probability",
                "live_threshold": DEFAULT_LIVE_THRESHOLD,
                "spoof_threshold": DEFAULT_SPOOF_THRESHOLD,
            },
        )
        files = (*copied, entry)
        manifest = PackManifest(
            name=out.name,
            version=base.version,
            built=date.today(),
            files=files,
            embedding=base.embedding,
            contract_id=compute_contract_id(files, base.embedding),
            description=f"{base.name} {base.version} with the MiniFASNet passive PAD pair",
        )
        write_manifest(work, manifest)
        if (base_dir / CALIBRATION_NAME).is_file():
            # Same recognizer, same contract: the base face thresholds still hold.
            shutil.copy2(base_dir / CALIBRATION_NAME, work / CALIBRATION_NAME)
        verify_pack(work)
    return ImportedPad(out, PAD_FILE, diff, len(crops))
