"""A compact single-class CenterNet-style cylinder detector, and its ONNX graph built by hand.

Backbone: conv-BN-ReLU stages down to stride 32; a small FPN (1x1 laterals, nearest 2x
upsampling, sums) back to stride 8; two 1x1 heads: the cylinder-centre logit and four log
distances (left, top, right, bottom) from the cell centre to the box edges, in stride units.
The graph (models/runtime/cylinder_detector.py has the contract) also decodes: sigmoid,
3x3 local-maximum suppression, and boxes in input pixels, so the runtime only thresholds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from models.runtime.cylinder_detector import BOXES_NAME, HEAT_NAME, INPUT_NAME

STRIDE = 8
PIXEL_SCALE = 127.5
LOG_DISTANCE_MAX = 5.0
"""Log distances are clipped here (e^5 x 8 px is far beyond any input) so exp never overflows."""
OPSET = 17
IR_VERSION = 8
PRIOR = 0.1
"""Initial centre probability (CenterNet's bias trick keeps the first focal losses small)."""


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class CylinderNet(nn.Module):
    """image [N,3,H,W] RGB 0..255 -> centre logits [N,1,H/8,W/8], log distances [N,4,H/8,W/8]."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 128), neck: int = 64) -> None:
        super().__init__()
        w1, w4, w8, w16, w32 = widths
        self.stage4 = nn.Sequential(conv_bn(3, w1, 2), conv_bn(w1, w4, 2))
        self.stage8 = nn.Sequential(conv_bn(w4, w8, 2), conv_bn(w8, w8))
        self.stage16 = nn.Sequential(conv_bn(w8, w16, 2), conv_bn(w16, w16))
        self.stage32 = nn.Sequential(conv_bn(w16, w32, 2), conv_bn(w32, w32))
        self.lat8 = nn.Conv2d(w8, neck, 1)
        self.lat16 = nn.Conv2d(w16, neck, 1)
        self.lat32 = nn.Conv2d(w32, neck, 1)
        self.fuse = conv_bn(neck, neck)
        self.heat = nn.Conv2d(neck, 1, 1)
        self.reg = nn.Conv2d(neck, 4, 1)
        assert self.heat.bias is not None and self.reg.bias is not None  # bias=True above
        nn.init.constant_(self.heat.bias, -math.log((1 - PRIOR) / PRIOR))
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.constant_(self.reg.bias, 1.0)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image / PIXEL_SCALE - 1.0
        c8 = self.stage8(self.stage4(x))
        c16 = self.stage16(c8)
        c32 = self.stage32(c16)
        p16 = self.lat16(c16) + F.interpolate(self.lat32(c32), scale_factor=2.0, mode="nearest")
        p8 = self.lat8(c8) + F.interpolate(p16, scale_factor=2.0, mode="nearest")
        f = self.fuse(p8)
        return self.heat(f), self.reg(f)


def cell_centres(height: int, width: int) -> np.ndarray:
    """[1,2,h,w] x and y of each output cell's centre, in input pixels."""
    h, w = height // STRIDE, width // STRIDE
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([(xs + 0.5) * STRIDE, (ys + 0.5) * STRIDE])[None]
    return grid.astype(np.float32)


def distances(reg: torch.Tensor) -> torch.Tensor:
    """Log distances -> distances in input pixels."""
    return torch.exp(torch.clamp(reg, max=LOG_DISTANCE_MAX)) * STRIDE


def decode_torch(
    logits: torch.Tensor, reg: torch.Tensor, centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the ONNX graph outputs: peak probabilities [N,1,h,w], boxes [N,4,h,w] in pixels."""
    heat = torch.sigmoid(logits)
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).float()
    d = distances(reg)
    xy = centres.to(reg.device)
    boxes = torch.cat([xy - d[:, 0:2], xy + d[:, 2:4]], dim=1)
    return peaks, boxes


def _folded(block: nn.Sequential) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with the eval-mode batch norm folded in."""
    conv, bn = block[0], block[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
    assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = bn.bias - bn.running_mean * scale
    return (
        weight.detach().cpu().numpy().astype(np.float32),
        bias.detach().cpu().numpy().astype(np.float32),
    )


def _plain(conv: nn.Conv2d) -> tuple[np.ndarray, np.ndarray]:
    assert conv.bias is not None
    return (
        conv.weight.detach().cpu().numpy().astype(np.float32),
        conv.bias.detach().cpu().numpy().astype(np.float32),
    )


def build_onnx(net: CylinderNet, width: int, height: int) -> onnx.ModelProto:
    """image float32 [N,3,H,W] RGB 0..255 -> heat [N,1,h,w] peaks, boxes [N,4,h,w] pixels."""
    net = net.eval()
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def conv(x: str, name: str, weight: np.ndarray, bias: np.ndarray, stride: int) -> str:
        k = weight.shape[-1]
        return op(
            "Conv",
            [x, const(f"{name}_w", weight), const(f"{name}_b", bias)],
            name,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
        )

    def block(x: str, name: str, seq: nn.Sequential) -> str:
        weight, bias = _folded(seq)
        c = seq[0]
        assert isinstance(c, nn.Conv2d)
        return op("Relu", [conv(x, name, weight, bias, int(c.stride[0]))], f"{name}_relu")

    def upsample(x: str, name: str) -> str:
        # asymmetric + floor is exactly torch's nearest 2x (source index = floor(i / 2)).
        return op(
            "Resize",
            [x, "", const(f"{name}_scales", np.asarray([1, 1, 2, 2], np.float32))],
            name,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    x = op("Mul", [INPUT_NAME, const("scale", np.asarray(1.0 / PIXEL_SCALE, np.float32))], "x_s")
    x = op("Sub", [x, const("one", np.asarray(1.0, np.float32))], "x_n")
    taps: dict[str, str] = {}
    for stage_name in ("stage4", "stage8", "stage16", "stage32"):
        stage = getattr(net, stage_name)
        for i, seq in enumerate(stage):
            x = block(x, f"{stage_name}_{i}", seq)
        taps[stage_name] = x
    l32 = conv(taps["stage32"], "lat32", *_plain(net.lat32), 1)
    l16 = conv(taps["stage16"], "lat16", *_plain(net.lat16), 1)
    l8 = conv(taps["stage8"], "lat8", *_plain(net.lat8), 1)
    p16 = op("Add", [l16, upsample(l32, "up32")], "p16")
    p8 = op("Add", [l8, upsample(p16, "up16")], "p8")
    f = block(p8, "fuse", net.fuse)
    logits = conv(f, "heat_logit", *_plain(net.heat), 1)
    reg = conv(f, "reg", *_plain(net.reg), 1)
    heat = op("Sigmoid", [logits], "heat_prob")
    pooled = op("MaxPool", [heat], "heat_max", kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4)
    peak = op("Cast", [op("Equal", [pooled, heat], "is_peak")], "peak_f", to=TensorProto.FLOAT)
    op("Mul", [heat, peak], HEAT_NAME)
    clipped = op("Min", [reg, const("reg_max", np.asarray(LOG_DISTANCE_MAX, np.float32))], "reg_c")
    d = op(
        "Mul",
        [op("Exp", [clipped], "reg_e"), const("stride", np.asarray(STRIDE, np.float32))],
        "dist",
    )
    sign = const("sign", np.asarray([-1, -1, 1, 1], np.float32).reshape(1, 4, 1, 1))
    # x0 y0 x1 y1 = (cx, cy, cx, cy) + (-l, -t, r, b)
    grid4 = const("centres4", np.concatenate([cell_centres(height, width)] * 2, axis=1))
    op("Add", [grid4, op("Mul", [d, sign], "dist_signed")], BOXES_NAME)
    h, w = height // STRIDE, width // STRIDE
    graph = helper.make_graph(
        nodes,
        "jifang_cylinder_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, height, width])],
        [
            helper.make_tensor_value_info(HEAT_NAME, TensorProto.FLOAT, ["N", 1, h, w]),
            helper.make_tensor_value_info(BOXES_NAME, TensorProto.FLOAT, ["N", 4, h, w]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jifang.training"
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "input_contract": f"image: float32 [N,3,{height},{width}] RGB 0..255, letterboxed",
            "output_contract": "heat: [N,1,h,w] centre probability at local maxima; "
            "boxes: [N,4,h,w] x0 y0 x1 y1 input pixels",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model
