"""A small CNN that scores a face crop as live or spoof, and its hand-built ONNX export.

The ONNX graph is written node by node (batch norm folded into the convolutions) rather
than through torch's exporter, so the file the edge loads has exactly the documented
signature and no exporter-version drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

INPUT_NAME = "crop"
OUTPUT_NAME = "live"
OPSET = 17
IR_VERSION = 8
PIXEL_SCALE = 127.5
"""Pixels 0..255 map to -1..1: x / 127.5 - 1."""


class LivenessNet(nn.Module):
    """Crops [N,3,S,S] RGB 0..255 float -> live logit [N]."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 3
        for width in widths:
            # Stride-2 3x3 convolutions: each halves the crop; moiré and print texture live
            # in the fine scales the first blocks see.
            blocks += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, 1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = self.features(crops / PIXEL_SCALE - 1.0)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        logit: torch.Tensor = self.fc(self.dropout(x))
        return logit.squeeze(1)


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with an eval-mode batch norm folded in."""
    assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return (
        weight.detach().cpu().numpy().astype(np.float32),
        bias.detach().cpu().numpy().astype(np.float32),
    )


def build_onnx(net: LivenessNet, size: int) -> onnx.ModelProto:
    """crop float32 [N,3,size,size] RGB 0..255 -> live float32 [N], probability in [0,1]."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def op(op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    x = op("Mul", [INPUT_NAME, const("scale", np.asarray(1.0 / PIXEL_SCALE, np.float32))], "scaled")
    x = op("Sub", [x, const("one", np.asarray(1.0, np.float32))], "normalised")
    layers = list(net.features)
    for i in range(0, len(layers), 3):
        conv, bn = layers[i], layers[i + 1]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        weight, bias = _folded(conv, bn)
        x = op(
            "Conv",
            [x, const(f"conv{i // 3}_w", weight), const(f"conv{i // 3}_b", bias)],
            f"conv{i // 3}",
            kernel_shape=list(conv.kernel_size),
            strides=list(conv.stride),
            pads=[int(conv.padding[0]), int(conv.padding[1])] * 2,
        )
        x = op("Relu", [x], f"relu{i // 3}")
    x = op("GlobalAveragePool", [x], "pooled")
    x = op("Flatten", [x], "flat", axis=1)
    fc_w = net.fc.weight.detach().cpu().numpy().astype(np.float32)
    fc_b = net.fc.bias.detach().cpu().numpy().astype(np.float32)
    x = op("Gemm", [x, const("fc_w", fc_w), const("fc_b", fc_b)], "logit", transB=1)
    x = op("Sigmoid", [x], "prob")
    nodes.append(
        helper.make_node(
            "Squeeze",
            [x, const("squeeze_axes", np.asarray([1], np.int64))],
            [OUTPUT_NAME],
            name=OUTPUT_NAME,
        )
    )
    graph = helper.make_graph(
        nodes,
        "jifang_liveness",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jifang.training"
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "input_contract": f"crop: float32 [N,3,{size},{size}] RGB 0..255",
            "output_contract": "live: float32 [N] probability that the face is live",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model
