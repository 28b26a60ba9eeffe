"""MiniFASNet (V2 and V1SE): the 80x80 passive anti-spoofing networks, rebuilt in torch.

The layer layout follows the published design (a MobileFaceNet-style trunk of inverted
bottleneck blocks and a depthwise "global" 5x5 head, three classes) and is read off the
state dict a site supplies: every block's channel widths come from the weight shapes, so one
class loads both variants, and `load_state_dict(strict=True)` proves the layout matches.

Input: N x 3 x 80 x 80, BGR pixels 0..255 as floats (the models were trained on OpenCV
images without scaling). Output: N x 3 logits; class 1 is a live face.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

INPUT_SIZE = 80
LIVE_INDEX = 1
# Trunk stages in order; the `*_dw`-free names are single strided bottlenecks, the others
# residual stacks. The strides give 80 -> 40 -> 20 -> 10 -> 5 before the 5x5 head.
_STAGES = ("conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5")
_STRIDED = {"conv_23", "conv_34", "conv_45"}


class ConvUnit(nn.Module):
    """Convolution, batch norm and (unless `linear`) a per-channel PReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, groups: int, linear: bool
    ) -> None:
        super().__init__()
        padding = kernel // 2 if kernel == 3 else 0
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu: nn.Module = nn.Identity() if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.prelu(self.bn(self.conv(x))))


class Squeeze(nn.Module):
    """Channel attention: global mean, 1x1 down, ReLU, 1x1 up, sigmoid gate."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.relu(self.bn1(self.fc1(gate)))
        return x * torch.sigmoid(self.bn2(self.fc2(gate)))


class Bottleneck(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when the shape is kept."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, squeeze: int | None) -> None:
        super().__init__()
        self.conv = ConvUnit(cin, hidden, 1, 1, 1, linear=False)
        self.conv_dw = ConvUnit(hidden, hidden, 3, stride, hidden, linear=False)
        self.project = ConvUnit(hidden, cout, 1, 1, 1, linear=True)
        self.se_module = Squeeze(cout, squeeze) if squeeze is not None else None
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Stack(nn.Module):
    """Residual bottlenecks at one resolution (`model.<i>` in the state dict)."""

    def __init__(self, blocks: list[Bottleneck]) -> None:
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.model(x))


class MiniFASNet(nn.Module):
    """The whole network; build it with `from_state_dict`."""

    def __init__(self, stages: dict[str, nn.Module], embedding: int, classes: int) -> None:
        super().__init__()
        self.conv1 = ConvUnit(3, 32, 3, 2, 1, linear=False)
        self.conv2_dw = ConvUnit(32, 32, 3, 1, 32, linear=False)
        for name in _STAGES:
            self.add_module(name, stages[name])
        width = 128
        self.conv_6_sep = ConvUnit(width, 512, 1, 1, 1, linear=False)
        self.conv_6_dw = ConvUnit(512, 512, 5, 1, 512, linear=True)
        self.linear = nn.Linear(512, embedding, bias=False)
        self.bn = nn.BatchNorm1d(embedding)
        self.prob = nn.Linear(embedding, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        for name in _STAGES:
            x = getattr(self, name)(x)
        x = self.conv_6_dw(self.conv_6_sep(x))
        x = self.bn(self.linear(torch.flatten(x, 1)))
        return torch.as_tensor(self.prob(x))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> MiniFASNet:
        """A network whose layout matches `state` (a `module.` prefix is accepted), loaded."""
        state = strip_prefix(state)
        stages: dict[str, nn.Module] = {}
        for name in _STAGES:
            if name in _STRIDED:
                stages[name] = _bottleneck(state, name, stride=2)
            else:
                count = len({int(m) for m in _block_indices(state, name)})
                if count == 0:
                    raise ValueError(f"state dict has no blocks for {name}")
                stages[name] = Stack(
                    [_bottleneck(state, f"{name}.model.{i}", stride=1) for i in range(count)]
                )
        embedding, classes = _shape(state, "prob.weight")[1], _shape(state, "prob.weight")[0]
        net = cls(stages, embedding, classes)
        net.load_state_dict(state, strict=True)
        return net.eval()


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the `module.` prefix that DataParallel training leaves."""
    return {key.removeprefix("module."): value for key, value in state.items()}


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"state dict has no {key}")
    return tuple(state[key].shape)


def _block_indices(state: Mapping[str, torch.Tensor], stage: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(stage)}\.model\.(\d+)\.")
    return [m.group(1) for key in state if (m := pattern.match(key))]


def _bottleneck(state: Mapping[str, torch.Tensor], prefix: str, stride: int) -> Bottleneck:
    hidden, cin = _shape(state, f"{prefix}.conv.conv.weight")[:2]
    cout = _shape(state, f"{prefix}.project.conv.weight")[0]
    squeeze_key = f"{prefix}.se_module.fc1.weight"
    squeeze = _shape(state, squeeze_key)[0] if squeeze_key in state else None
    return Bottleneck(cin, hidden, cout, stride, squeeze)
