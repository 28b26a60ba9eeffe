"""Parse dlib's ResNet v1 face recognizer (.dat) and rebuild it as an ONNX graph."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.convert.dlib_format import AliasShape, DlibFormatError, DlibReader, FloatArray

logger = logging.getLogger(__name__)

INPUT_NAME = "chip"
OUTPUT_NAME = "descriptor"
OPSET = 17
# IR 8 is the version that introduced opset 17; every onnxruntime since 1.12 loads it.
IR_VERSION = 8

# add_layer versions: 2 over a sub-network (or over the input, in older files), 3 over the
# input with a sample-expansion factor; tag and skip wrappers write version 1.
_ADD_LAYER_VERSION = 2
_ADD_LAYER_INPUT_VERSION = 3
_WRAPPER_VERSION = 1
_LOSS_VERSION = 1
_INPUT_PREFIX = "input"
# dlib divides the mean-subtracted pixel by 256 (not 255) in input_rgb_image_sized.
_PIXEL_SCALE = 256.0


class LayerKind(StrEnum):
    """The dlib layer types this reader understands."""

    INPUT = "input"
    CON = "con"
    AFFINE = "affine"
    RELU = "relu"
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    ADD_PREV = "add_prev"
    FC = "fc"
    LOSS = "loss"


@dataclass(frozen=True)
class InputLayer:
    """input_rgb_image_sized: per-channel RGB mean and the fixed chip size."""

    mean_rgb: tuple[float, float, float]
    nr: int
    nc: int
    kind: LayerKind = LayerKind.INPUT


@dataclass(frozen=True)
class ConLayer:
    """con_: 2-D convolution with OIHW filters and a bias per filter."""

    weights: FloatArray = field(repr=False)
    bias: FloatArray = field(repr=False)
    stride: tuple[int, int]
    pad: tuple[int, int]
    kind: LayerKind = LayerKind.CON

    @property
    def num_filters(self) -> int:
        """Output channels."""
        return int(self.weights.shape[0])


@dataclass(frozen=True)
class AffineLayer:
    """affine_: y = gamma * x + beta per channel (batch norm frozen after training)."""

    gamma: FloatArray = field(repr=False)
    beta: FloatArray = field(repr=False)
    mode: int
    kind: LayerKind = LayerKind.AFFINE


@dataclass(frozen=True)
class ReluLayer:
    """relu_: max(x, 0)."""

    kind: LayerKind = LayerKind.RELU


@dataclass(frozen=True)
class PoolLayer:
    """max_pool_ / avg_pool_: a window of 0 means the whole input (global pooling)."""

    kind: LayerKind
    window: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]

    @property
    def is_global(self) -> bool:
        """True when the window covers the whole input."""
        return self.window == (0, 0)


@dataclass(frozen=True)
class AddPrevLayer:
    """add_prev_: sum of the sub-network output and the output of the tagged layer."""

    tag: int
    kind: LayerKind = LayerKind.ADD_PREV


@dataclass(frozen=True)
class FcLayer:
    """fc_: y = flatten(x) . W (+ b); W is stored (n_in, n_out)."""

    weights: FloatArray = field(repr=False)
    bias: FloatArray | None = field(repr=False)
    kind: LayerKind = LayerKind.FC


@dataclass(frozen=True)
class LossMetricLayer:
    """loss_metric_: training-only; the descriptor is its input."""

    margin: float
    distance_threshold: float
    kind: LayerKind = LayerKind.LOSS


Layer = (
    InputLayer
    | ConLayer
    | AffineLayer
    | ReluLayer
    | PoolLayer
    | AddPrevLayer
    | FcLayer
    | LossMetricLayer
)


@dataclass(frozen=True)
class Node:
    """One layer in forward order, with the indices of the nodes it reads."""

    index: int
    layer: Layer
    inputs: tuple[int, ...]
    offset: int = -1
    """Byte offset of the layer in the file; -1 when the net was built in code."""


@dataclass(frozen=True)
class DlibNet:
    """A parsed dlib network in forward order (input first, loss last)."""

    nodes: tuple[Node, ...]

    def layer_counts(self) -> dict[LayerKind, int]:
        """How many layers of each kind the network holds."""
        return dict(Counter(node.layer.kind for node in self.nodes))

    def parameter_count(self) -> int:
        """Number of learned scalars (conv, affine and fc weights and biases)."""
        total = 0
        for node in self.nodes:
            layer = node.layer
            if isinstance(layer, ConLayer):
                total += layer.weights.size + layer.bias.size
            elif isinstance(layer, AffineLayer):
                total += layer.gamma.size + layer.beta.size
            elif isinstance(layer, FcLayer):
                total += layer.weights.size + (0 if layer.bias is None else layer.bias.size)
        return total


@dataclass(frozen=True)
class _Wrapper:
    """A tag or skip wrapper: the file does not say which (that lives in the C++ type)."""


_Item = tuple[int, Layer | _Wrapper]
"""A layer or wrapper with the byte offset where it starts."""


# ---------------------------------------------------------------------------------------
# Layer details


def _split_params(
    params: FloatArray, shapes: list[AliasShape], start: int, what: str
) -> list[FloatArray]:
    """Cut a layer's flat parameter tensor into consecutive alias views."""
    flat = params.reshape(-1)
    need = sum(shape.size for shape in shapes)
    if need != flat.size:
        raise DlibFormatError(
            start, f"{what} params of {need} floats (sum of its aliases)", f"found {flat.size}"
        )
    views: list[FloatArray] = []
    offset = 0
    for shape in shapes:
        views.append(flat[offset : offset + shape.size].reshape(shape.shape).copy())
        offset += shape.size
    return views


def _skip_floats(reader: DlibReader, count: int, what: str) -> None:
    # Learning-rate and weight-decay multipliers only matter for training.
    for _ in range(count):
        reader.read_float(what)


def _read_input(reader: DlibReader) -> InputLayer:
    start = reader.offset
    name = reader.read_string("input layer name")
    if name != "input_rgb_image_sized":
        raise DlibFormatError(start, "input layer 'input_rgb_image_sized'", f"found {name!r}")
    mean = (
        reader.read_float("avg_red"),
        reader.read_float("avg_green"),
        reader.read_float("avg_blue"),
    )
    nr = reader.read_dim("input nr")
    nc = reader.read_dim("input nc")
    return InputLayer(mean_rgb=mean, nr=nr, nc=nc)


def _read_con(reader: DlibReader, start: int) -> ConLayer:
    params = reader.read_tensor("con params")
    num_filters = reader.read_dim("con num_filters")
    nr = reader.read_dim("con nr")
    nc = reader.read_dim("con nc")
    stride = (reader.read_dim("con stride_y"), reader.read_dim("con stride_x"))
    pad = (reader.read_dim("con padding_y"), reader.read_dim("con padding_x"))
    filters = reader.read_alias_tensor("con filters")
    biases = reader.read_alias_tensor("con biases")
    _skip_floats(reader, 4, "con learning-rate setting")
    if filters.n != num_filters or (filters.nr, filters.nc) != (nr, nc):
        raise DlibFormatError(
            start, f"con filters of shape ({num_filters}, k, {nr}, {nc})", str(filters.shape)
        )
    if biases.size != num_filters:
        raise DlibFormatError(start, f"con biases of {num_filters}", f"found {biases.size}")
    weights, bias = _split_params(params, [filters, biases], start, "con")
    return ConLayer(weights=weights, bias=bias.reshape(-1), stride=stride, pad=pad)


def _read_affine(reader: DlibReader, start: int) -> AffineLayer:
    params = reader.read_tensor("affine params")
    gamma_shape = reader.read_alias_tensor("affine gamma")
    beta_shape = reader.read_alias_tensor("affine beta")
    mode = reader.read_int("affine mode")
    if gamma_shape != beta_shape:
        raise DlibFormatError(
            start, f"affine beta shaped like gamma {gamma_shape.shape}", str(beta_shape.shape)
        )
    gamma, beta = _split_params(params, [gamma_shape, beta_shape], start, "affine")
    if gamma_shape.n != 1 or gamma_shape.nr != 1 or gamma_shape.nc != 1:
        # Per-position (fc-mode) affine never occurs in ResNet v1; refuse rather than guess.
        raise DlibFormatError(start, "per-channel affine (1, k, 1, 1)", str(gamma_shape.shape))
    return AffineLayer(gamma=gamma.reshape(-1), beta=beta.reshape(-1), mode=mode)


def _read_pool(reader: DlibReader, kind: LayerKind) -> PoolLayer:
    window = (reader.read_dim("pool nr"), reader.read_dim("pool nc"))
    stride = (reader.read_dim("pool stride_y"), reader.read_dim("pool stride_x"))
    pad = (reader.read_dim("pool padding_y"), reader.read_dim("pool padding_x"))
    return PoolLayer(kind=kind, window=window, stride=stride, pad=pad)


def _read_fc(reader: DlibReader, start: int) -> FcLayer:
    n_out = reader.read_dim("fc num_outputs")
    n_in = reader.read_dim("fc num_inputs")
    params = reader.read_tensor("fc params")
    weight_shape = reader.read_alias_tensor("fc weights")
    bias_shape = reader.read_alias_tensor("fc biases")
    bias_mode = reader.read_int("fc bias mode")
    _skip_floats(reader, 4, "fc learning-rate setting")
    if weight_shape.size != n_in * n_out:
        raise DlibFormatError(start, f"fc weights of {n_in}x{n_out}", str(weight_shape.shape))
    # dlib's FC_NO_BIAS is 1: the params then hold only the weights.
    has_bias = bias_mode == 0
    shapes = [weight_shape, bias_shape] if has_bias else [weight_shape]
    views = _split_params(params, shapes, start, "fc")
    weights = views[0].reshape(n_in, n_out)
    bias = views[1].reshape(-1) if has_bias else None
    return FcLayer(weights=weights, bias=bias)


_NO_TAG = 0


def _read_layer_details(reader: DlibReader) -> Layer:
    start = reader.offset
    name = reader.read_string("layer name")
    if name == "con_4":
        return _read_con(reader, start)
    if name == "affine_":
        return _read_affine(reader, start)
    if name == "relu_":
        return ReluLayer()
    if name == "max_pool_2":
        return _read_pool(reader, LayerKind.MAX_POOL)
    if name == "avg_pool_2":
        return _read_pool(reader, LayerKind.AVG_POOL)
    if name == "add_prev_":
        # The tag id is a template argument; it is filled in by _resolve.
        return AddPrevLayer(tag=_NO_TAG)
    if name == "fc_2":
        return _read_fc(reader, start)
    raise DlibFormatError(start, "a supported dlib layer", f"found {name!r}")


def _read_add_layer_tail(reader: DlibReader, over_input_v3: bool) -> None:
    # Training state: three flags and three cached tensors, then (v3) the expansion factor.
    for what in ("setup_called", "gradient_input_is_stale", "output_disabled"):
        reader.read_bool(what)
    for what in ("x_grad", "cached_output", "params_grad"):
        reader.read_tensor(what)
    if over_input_v3:
        reader.read_int("sample_expansion_factor")


def _next_is_input(reader: DlibReader) -> bool:
    """Peek: does an input layer (a name string starting 'input') start here?"""
    probe = DlibReader(reader.data, reader.offset)
    try:
        return probe.read_string("probe").startswith(_INPUT_PREFIX)
    except DlibFormatError:
        return False


def _read_loss(reader: DlibReader) -> LossMetricLayer:
    start = reader.offset
    name = reader.read_string("loss layer name")
    if name != "loss_metric_2":
        raise DlibFormatError(start, "loss layer 'loss_metric_2'", f"found {name!r}")
    margin = reader.read_float("loss margin")
    threshold = reader.read_float("loss distance threshold")
    return LossMetricLayer(margin=margin, distance_threshold=threshold)


def _read_sequence(reader: DlibReader) -> list[_Item]:
    """Read the whole file into layers and wrappers in forward order (input first)."""
    reader.expect_int(_LOSS_VERSION, "add_loss_layer version")
    loss_offset = reader.offset
    loss = _read_loss(reader)
    # Outermost first: each wrapper writes its sub-network before its own layer details,
    # so the pending add_layers are completed innermost-first once the input is reached.
    pending: list[tuple[int, int | _Wrapper]] = []
    while True:
        start = reader.offset
        version = reader.read_int("layer wrapper version")
        if version == _WRAPPER_VERSION:
            pending.append((start, _Wrapper()))
            continue
        if version not in (_ADD_LAYER_VERSION, _ADD_LAYER_INPUT_VERSION):
            raise DlibFormatError(
                start, "add_layer version 2 or 3, or tag/skip version 1", f"found {version}"
            )
        pending.append((start, version))
        if version == _ADD_LAYER_INPUT_VERSION or _next_is_input(reader):
            break

    forward: list[_Item] = [(reader.offset, _read_input(reader))]
    for start, item in reversed(pending):
        if isinstance(item, _Wrapper):
            forward.append((start, item))
            continue
        over_input_v3 = len(forward) == 1 and item == _ADD_LAYER_INPUT_VERSION
        forward.append((reader.offset, _read_layer_details(reader)))
        _read_add_layer_tail(reader, over_input_v3)
    forward.append((loss_offset, loss))
    if not reader.at_end():
        raise DlibFormatError(reader.offset, "end of file", f"{reader.remaining} bytes left")
    return forward


# ---------------------------------------------------------------------------------------
# Tag/skip resolution


def _resolve(sequence: list[_Item]) -> DlibNet:
    """Wire tags, skips and add_prev layers into explicit node inputs.

    dlib stores no tag ids, so this follows ResNet v1's two templates:
    residual = add_prev1<block<tag1<x>>> and
    residual_down = add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>>.
    In forward order a lone wrapper is tag1; a wrapper directly around another is skip1
    around tag2; an add_prev reached through a skip1 is add_prev2.
    """
    nodes: list[Node] = []
    current = -1
    tags: dict[int, int] = {}
    through_skip = False
    i = 0
    while i < len(sequence):
        offset, item = sequence[i]
        if isinstance(item, _Wrapper):
            run = 1
            while i + run < len(sequence) and isinstance(sequence[i + run][1], _Wrapper):
                run += 1
            if run == 1:
                tags[1] = current
            elif run == 2:
                if 1 not in tags:
                    raise DlibFormatError(offset, "a tag1 before this skip1")
                tags[2] = current
                current = tags[1]
                through_skip = True
            else:
                raise DlibFormatError(
                    offset, "at most two nested tag/skip wrappers", f"found {run}"
                )
            i += run
            continue
        if isinstance(item, AddPrevLayer):
            tag = 2 if through_skip else 1
            if tag not in tags:
                raise DlibFormatError(offset, f"a tag{tag} before add_prev{tag}")
            layer: Layer = AddPrevLayer(tag=tag)
            inputs: tuple[int, ...] = (current, tags.pop(tag))
            through_skip = False
        elif isinstance(item, InputLayer):
            layer, inputs = item, ()
        else:
            layer, inputs = item, (current,)
        node = Node(len(nodes), layer, inputs, offset)
        nodes.append(node)
        current = node.index
        i += 1
    return DlibNet(nodes=tuple(nodes))


def parse_dlib_resnet(dat_bytes: bytes) -> DlibNet:
    """Parse a dlib ResNet recognizer file into layers in forward order."""
    return _resolve(_read_sequence(DlibReader(dat_bytes)))


# ---------------------------------------------------------------------------------------
# ONNX building


Shape = tuple[int, int, int]
"""Channels, rows, columns of one sample."""


def _conv_out(size: int, window: int, stride: int, pad: int) -> int:
    # dlib floors: 1 + (size + 2*pad - window) / stride, for both conv and pooling.
    return 1 + (size + 2 * pad - window) // stride


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers while walking the dlib layers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def _pads(pad: tuple[int, int]) -> list[int]:
    return [pad[0], pad[1], pad[0], pad[1]]


def _emit_input(g: _GraphBuilder, layer: InputLayer, name: str) -> str:
    mean = np.asarray(layer.mean_rgb, dtype=np.float32).reshape(1, 3, 1, 1)
    centred = g.op("Sub", [INPUT_NAME, g.const(f"{name}_mean", mean)], f"{name}_centred")
    scale = np.asarray(1.0 / _PIXEL_SCALE, dtype=np.float32)
    return g.op("Mul", [centred, g.const(f"{name}_scale", scale)], name)


def _pad_to(g: _GraphBuilder, x: str, have: Shape, want: Shape, name: str) -> str:
    if have == want:
        return x
    # dlib's add zero-fills the smaller tensor at the end of each axis (top-left aligned).
    end = [0] + [w - h for w, h in zip(want, have, strict=True)]
    pads = np.asarray([0, 0, 0, 0] + end, dtype=np.int64)
    return g.op("Pad", [x, g.const(f"{name}_pads", pads)], name, mode="constant")


def _emit(g: _GraphBuilder, node: Node, names: list[str], shapes: list[Shape]) -> tuple[str, Shape]:
    layer = node.layer
    name = f"n{node.index:03d}_{layer.kind.value}"
    x = names[node.inputs[0]] if node.inputs else INPUT_NAME
    c, h, w = shapes[node.inputs[0]] if node.inputs else (0, 0, 0)
    if isinstance(layer, InputLayer):
        return _emit_input(g, layer, name), (3, layer.nr, layer.nc)
    if isinstance(layer, ConLayer):
        kh, kw = int(layer.weights.shape[2]), int(layer.weights.shape[3])
        if layer.weights.shape[1] != c:
            raise DlibFormatError(
                node.offset, f"{name} filters over {c} channels", f"found {layer.weights.shape[1]}"
            )
        out = g.op(
            "Conv",
            [x, g.const(f"{name}_w", layer.weights), g.const(f"{name}_b", layer.bias)],
            name,
            kernel_shape=[kh, kw],
            strides=list(layer.stride),
            pads=_pads(layer.pad),
        )
        return out, (
            layer.num_filters,
            _conv_out(h, kh, layer.stride[0], layer.pad[0]),
            _conv_out(w, kw, layer.stride[1], layer.pad[1]),
        )
    if isinstance(layer, AffineLayer):
        gamma = layer.gamma.reshape(1, -1, 1, 1)
        beta = layer.beta.reshape(1, -1, 1, 1)
        scaled = g.op("Mul", [x, g.const(f"{name}_gamma", gamma)], f"{name}_scaled")
        return g.op("Add", [scaled, g.const(f"{name}_beta", beta)], name), (c, h, w)
    if isinstance(layer, ReluLayer):
        return g.op("Relu", [x], name), (c, h, w)
    if isinstance(layer, PoolLayer):
        return _emit_pool(g, layer, x, name, (c, h, w))
    if isinstance(layer, AddPrevLayer):
        other = node.inputs[1]
        other_shape = shapes[other]
        want = (max(c, other_shape[0]), max(h, other_shape[1]), max(w, other_shape[2]))
        a = _pad_to(g, x, (c, h, w), want, f"{name}_pad_a")
        b = _pad_to(g, names[other], other_shape, want, f"{name}_pad_b")
        return g.op("Add", [a, b], name), want
    if isinstance(layer, FcLayer):
        n_in, n_out = layer.weights.shape
        if c * h * w != n_in:
            raise DlibFormatError(
                node.offset, f"{name} input of {n_in} values", f"found {c * h * w}"
            )
        flat = g.op("Flatten", [x], f"{name}_flat", axis=1)
        out = g.op(
            "MatMul",
            [flat, g.const(f"{name}_w", layer.weights)],
            name if layer.bias is None else f"{name}_mm",
        )
        if layer.bias is not None:
            out = g.op("Add", [out, g.const(f"{name}_b", layer.bias)], name)
        return out, (int(n_out), 1, 1)
    # The loss layer computes nothing at inference: the descriptor is its input.
    return x, (c, h, w)


def _emit_pool(
    g: _GraphBuilder, layer: PoolLayer, x: str, name: str, shape: Shape
) -> tuple[str, Shape]:
    c, h, w = shape
    is_max = layer.kind == LayerKind.MAX_POOL
    if layer.is_global:
        op = "GlobalMaxPool" if is_max else "GlobalAveragePool"
        return g.op(op, [x], name), (c, 1, 1)
    if 0 in layer.window:
        # dlib allows "whole axis" on one axis only; ResNet v1 never does, so refuse it.
        raise DlibFormatError(-1, f"{name} window with both or neither axis 0", str(layer.window))
    attrs: dict[str, Any] = {
        "kernel_shape": list(layer.window),
        "strides": list(layer.stride),
        "pads": _pads(layer.pad),
        "ceil_mode": 0,
    }
    if not is_max:
        # dlib averages over the part of the window inside the image.
        attrs["count_include_pad"] = 0
    out = g.op("MaxPool" if is_max else "AveragePool", [x], name, **attrs)
    return out, (
        c,
        _conv_out(h, layer.window[0], layer.stride[0], layer.pad[0]),
        _conv_out(w, layer.window[1], layer.stride[1], layer.pad[1]),
    )


def build_onnx(net: DlibNet) -> onnx.ModelProto:
    """Build the ONNX graph (chip [N,3,H,W] RGB 0..255 -> descriptor [N,D]) for a parsed net."""
    first = net.nodes[0].layer
    if not isinstance(first, InputLayer):
        raise DlibFormatError(-1, "an input layer first", f"found {first.kind}")
    g = _GraphBuilder()
    names: list[str] = []
    shapes: list[Shape] = []
    for node in net.nodes:
        out, shape = _emit(g, node, names, shapes)
        names.append(out)
        shapes.append(shape)
    last = next(n for n in reversed(net.nodes) if not isinstance(n.layer, LossMetricLayer))
    if not isinstance(last.layer, FcLayer):
        # The descriptor contract is [N, D]: only an fc layer gives that shape.
        raise DlibFormatError(last.offset, "an fc layer before the loss", str(last.layer.kind))
    g.nodes.append(helper.make_node("Identity", [names[-1]], [OUTPUT_NAME], name=OUTPUT_NAME))
    chip = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, ["N", 3, first.nr, first.nc]
    )
    descriptor = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", shapes[-1][0]])
    graph = helper.make_graph(g.nodes, "dlib_resnet_v1", [chip], [descriptor], g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="jifang.models.convert.dlib_resnet",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_dlib_resnet(dat_bytes: bytes) -> onnx.ModelProto:
    """Convert dlib_face_recognition_resnet_model_v1.dat bytes to an ONNX model."""
    net = parse_dlib_resnet(dat_bytes)
    logger.info(
        "parsed dlib network: %d nodes, %d parameters, %s",
        len(net.nodes),
        net.parameter_count(),
        {kind.value: count for kind, count in net.layer_counts().items()},
    )
    model = build_onnx(net)
    # Provenance for the model-pack manifest: which upstream file this graph came from.
    helper.set_model_props(
        model,
        {
            "source_format": "dlib_dnn",
            "source_sha256": hashlib.sha256(dat_bytes).hexdigest(),
            "input_contract": "chip: float32 [N,3,H,W] RGB 0..255",
            "output_contract": "descriptor: float32 [N,D] raw dlib descriptor",
        },
    )
    return model


def write_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Write an ONNX model to `path`, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    logger.info("wrote %s (%d bytes)", path, path.stat().st_size)
