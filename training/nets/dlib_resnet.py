"""dlib's ResNet v1 face recognizer as a trainable torch module, built from the parsed file.

The module is a node-for-node mirror of `models.convert.dlib_resnet.DlibNet`: every conv,
affine (frozen batch norm), pool, residual add and the final fc become torch layers with
the same weights, so a fine-tune starts exactly where the default pack's recognizer is.
`to_dlib_net` writes the trained weights back into the same layer records, and the edge's
own ONNX builder (`build_onnx`) turns them into a graph with the default pack's signature.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.convert.dlib_resnet import (
    AddPrevLayer,
    AffineLayer,
    ConLayer,
    DlibNet,
    FcLayer,
    InputLayer,
    Layer,
    LossMetricLayer,
    Node,
    PoolLayer,
    ReluLayer,
)

PIXEL_SCALE = 256.0
"""dlib divides the mean-subtracted pixel by 256 (see models.convert.dlib_resnet)."""


class Affine(nn.Module):
    """y = gamma * x + beta per channel: dlib's inference-time batch norm, kept learnable."""

    def __init__(self, gamma: np.ndarray, beta: np.ndarray) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(gamma.astype(np.float32)).view(1, -1, 1, 1))
        self.beta = nn.Parameter(torch.from_numpy(beta.astype(np.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _pad_like(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-fill x at the end of the channel and spatial axes (dlib's add_prev semantics)."""
    dc, dh, dw = shape[1] - x.shape[1], shape[2] - x.shape[2], shape[3] - x.shape[3]
    if dc == dh == dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh, 0, dc))


class DlibResNet(nn.Module):
    """Chips [N,3,H,W] RGB 0..255 float -> raw (unnormalised) descriptors [N,D]."""

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        first = net.nodes[0].layer
        if not isinstance(first, InputLayer):
            raise ValueError(f"a dlib network starts with its input layer, found {first.kind}")
        self.source = net
        self.chip_size = first.nr
        self.mean: torch.Tensor
        self.register_buffer(
            "mean", torch.tensor(first.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1)
        )
        self.nodes: list[Node] = [n for n in net.nodes if not isinstance(n.layer, LossMetricLayer)]
        last = self.nodes[-1].layer
        if not isinstance(last, FcLayer):
            raise ValueError(f"a recognizer ends with an fc layer, found {last.kind}")
        self.dim = int(last.weights.shape[1])
        self.layers = nn.ModuleDict()
        for node in self.nodes:
            module = _module_for(node.layer)
            if module is not None:
                self.layers[str(node.index)] = module

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        outputs: dict[int, torch.Tensor] = {}
        x = chips
        for node in self.nodes:
            layer = node.layer
            x = outputs[node.inputs[0]] if node.inputs else chips
            if isinstance(layer, InputLayer):
                x = (x - self.mean) / PIXEL_SCALE
            elif isinstance(layer, AddPrevLayer):
                other = outputs[node.inputs[1]]
                shape = torch.Size(max(a, b) for a, b in zip(x.shape, other.shape, strict=True))
                x = _pad_like(x, shape) + _pad_like(other, shape)
            elif isinstance(layer, FcLayer):
                x = self.layers[str(node.index)](torch.flatten(x, 1))
            else:
                x = self.layers[str(node.index)](x)
            outputs[node.index] = x
        return x

    def parameter_groups(self) -> list[tuple[int, list[nn.Parameter]]]:
        """(node index, parameters) of every learned layer, input to output."""
        return [
            (node.index, list(self.layers[str(node.index)].parameters()))
            for node in self.nodes
            if str(node.index) in self.layers
            and len(list(self.layers[str(node.index)].parameters())) > 0
        ]

    def freeze_all_but_last(self, count: int) -> int:
        """Train only the last `count` learned layers (0 trains all); returns layers trained."""
        groups = self.parameter_groups()
        trained = groups if count <= 0 else groups[-count:]
        keep = {id(p) for _, params in trained for p in params}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)
        return len(trained)

    def to_dlib_net(self) -> DlibNet:
        """The source network with this module's current weights written back into it."""
        nodes = []
        for node in self.source.nodes:
            key = str(node.index)
            layer: Layer = node.layer
            if key in self.layers:
                layer = _layer_from(node.layer, self.layers[key])
            nodes.append(dataclasses.replace(node, layer=layer))
        return DlibNet(nodes=tuple(nodes))


def _module_for(layer: Layer) -> nn.Module | None:
    if isinstance(layer, ConLayer):
        out_c, in_c, kh, kw = layer.weights.shape
        conv = nn.Conv2d(
            int(in_c), int(out_c), (int(kh), int(kw)), stride=layer.stride, padding=layer.pad
        )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(layer.weights.astype(np.float32)))
            assert conv.bias is not None  # Conv2d is built with a bias
            conv.bias.copy_(torch.from_numpy(layer.bias.astype(np.float32)))
        return conv
    if isinstance(layer, AffineLayer):
        return Affine(layer.gamma, layer.beta)
    if isinstance(layer, ReluLayer):
        return nn.ReLU()
    if isinstance(layer, PoolLayer):
        return _pool_for(layer)
    if isinstance(layer, FcLayer):
        n_in, n_out = layer.weights.shape
        fc = nn.Linear(int(n_in), int(n_out), bias=layer.bias is not None)
        with torch.no_grad():
            # dlib stores W as (n_in, n_out); torch keeps (n_out, n_in).
            fc.weight.copy_(torch.from_numpy(layer.weights.T.astype(np.float32)))
            if layer.bias is not None:
                fc.bias.copy_(torch.from_numpy(layer.bias.astype(np.float32)))
        return fc
    return None


def _pool_for(layer: PoolLayer) -> nn.Module:
    is_max = layer.kind.value == "max_pool"
    if layer.is_global:
        return nn.AdaptiveMaxPool2d(1) if is_max else nn.AdaptiveAvgPool2d(1)
    if 0 in layer.window:
        raise ValueError(f"pool window {layer.window}: one whole axis is not supported")
    if is_max:
        return nn.MaxPool2d(layer.window, layer.stride, layer.pad)
    # dlib averages over the part of the window inside the image.
    return nn.AvgPool2d(layer.window, layer.stride, layer.pad, count_include_pad=False)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


def _layer_from(layer: Layer, module: nn.Module) -> Layer:
    if isinstance(layer, ConLayer) and isinstance(module, nn.Conv2d):
        assert module.bias is not None  # built with a bias in _module_for
        return dataclasses.replace(layer, weights=_numpy(module.weight), bias=_numpy(module.bias))
    if isinstance(layer, AffineLayer) and isinstance(module, Affine):
        return dataclasses.replace(
            layer, gamma=_numpy(module.gamma).reshape(-1), beta=_numpy(module.beta).reshape(-1)
        )
    if isinstance(layer, FcLayer) and isinstance(module, nn.Linear):
        bias = None if module.bias is None else _numpy(module.bias)
        return dataclasses.replace(layer, weights=_numpy(module.weight).T.copy(), bias=bias)
    return layer
