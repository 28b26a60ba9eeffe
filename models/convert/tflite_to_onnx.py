"""Convert the small float TFLite vision models jifang uses into ONNX (opset 17).

Layout rule: every rank-4 tensor is NHWC in TFLite and NCHW in the ONNX graph; tensors of any
other rank keep their TFLite layout. So the ONNX input of an image model is [1, C, H, W], and
rank-4 graph outputs are transposed back to NHWC so that raw outputs match the TFLite model's.
Constant sub-graphs (DENSIFY of sparse weights, DEQUANTIZE of float16 weights) are folded here,
so the ONNX model holds plain float32 weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

from models.errors import ModelBuildError

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
# IR 8 is what onnxruntime >= 1.14 reads; the edge images may lag the build machine.
ONNX_IR_VERSION = 8

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

# tflite.TensorType -> numpy dtype for the tensor types these models store.
_NUMPY_DTYPES: dict[int, npt.DTypeLike] = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.UINT8: np.uint8,
    tflite.TensorType.INT64: np.int64,
    tflite.TensorType.INT8: np.int8,
    tflite.TensorType.INT16: np.int16,
}

_OP_NAMES = {
    value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")
}


class UnsupportedOpError(ModelBuildError):
    """The TFLite model uses an operator (or operator variant) this converter does not handle."""


Array = npt.NDArray[Any]


@dataclass
class _Graph:
    """Conversion state: the TFLite subgraph being read and the ONNX graph being written."""

    model: tflite.Model
    subgraph: tflite.SubGraph
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    constants: dict[int, Array] = field(default_factory=dict)
    materialised: set[int] = field(default_factory=set)
    uid: int = 0

    def tensor(self, index: int) -> tflite.Tensor:
        return self.subgraph.Tensors(index)

    def shape(self, index: int) -> list[int]:
        return [int(d) for d in self.tensor(index).ShapeAsNumpy()] if self.rank(index) else []

    def rank(self, index: int) -> int:
        return int(self.tensor(index).ShapeLength())

    def label(self, index: int) -> str:
        return str(self.tensor(index).Name().decode("utf-8", "replace"))

    def fresh(self, hint: str) -> str:
        self.uid += 1
        return f"{hint}_{self.uid}"

    def node(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def const(self, array: Array, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def value(self, index: int) -> str:
        """Return the ONNX name holding TFLite tensor `index`, materialising constants lazily."""
        name = tensor_name(index)
        if index in self.constants and index not in self.materialised:
            array = self.constants[index]
            if array.dtype == np.float16:
                array = array.astype(np.float32)  # the ONNX graph computes in float32 only
            if array.ndim == 4:
                array = array.transpose(NHWC_TO_NCHW)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
            self.materialised.add(index)
        return name


def tensor_name(index: int) -> str:
    """ONNX name for TFLite tensor `index` (TFLite names are long ';'-joined op lists)."""
    return f"t{index}"


def _read_buffer(model: tflite.Model, tensor: tflite.Tensor) -> Array | None:
    """Return the raw stored values of a constant tensor, or None for an activation."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer is not None and buffer.Offset() > 1:
        # Models over 2 GB keep weights after the flatbuffer; none of ours do.
        raise UnsupportedOpError(f"tensor {tensor.Name()!r} stores its data outside the flatbuffer")
    if buffer is None or buffer.DataLength() == 0:
        return None
    dtype = _NUMPY_DTYPES.get(tensor.Type())
    if dtype is None:
        raise UnsupportedOpError(
            f"constant tensor {tensor.Name()!r} has TFLite type {tensor.Type()}, not supported"
        )
    # A sparse tensor stores only its kept values; DENSIFY restores the shape.
    raw = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=np.dtype(dtype).newbyteorder("<"))
    if tensor.Sparsity() is not None:
        return raw
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    return raw.reshape(shape)


def _index_vector(table: Any, kind: int) -> Array:
    """Read a tflite SparseIndexVector union member as an int64 array."""
    vector_types = {
        tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
        tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
        tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector,
    }
    if kind not in vector_types:
        raise UnsupportedOpError(f"sparse index vector type {kind} is not supported")
    vector = vector_types[kind]()
    vector.Init(table.Bytes, table.Pos)
    return np.asarray(vector.ValuesAsNumpy(), np.int64)


def densify(tensor: tflite.Tensor, values: Array) -> Array:
    """Expand a TFLite sparse constant (DENSE/SPARSE_CSR levels, optional blocks) to dense."""
    sparsity = tensor.Sparsity()
    shape = [int(d) for d in tensor.ShapeAsNumpy()]
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    rank = len(shape)
    # Walk the traversal levels breadth-first: `position` indexes the next level's storage and,
    # after the last level, the values array; `coords` holds each kept element's level indices.
    position = np.zeros(1, dtype=np.int64)
    coords: list[Array] = []
    for level in range(len(order)):
        meta = sparsity.DimMetadata(level)
        if meta.Format() == tflite.DimensionType.DENSE:
            size = int(meta.DenseSize())
            position = (position[:, None] * size + np.arange(size)).reshape(-1)
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size), len(position) // size))
        else:
            segments = _index_vector(meta.ArraySegments(), meta.ArraySegmentsType())
            indices = _index_vector(meta.ArrayIndices(), meta.ArrayIndicesType())
            starts, counts = segments[position], segments[position + 1] - segments[position]
            total = int(counts.sum())
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            position = np.repeat(starts, counts) + offsets
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(indices[position])
    block_sizes = {
        block_map[level_dim - rank]: int(sparsity.DimMetadata(level).DenseSize())
        for level, level_dim in enumerate(order)
        if level_dim >= rank
    }
    dense_index = [np.zeros(len(position), dtype=np.int64) for _ in range(rank)]
    for level, level_dim in enumerate(order):
        if level_dim < rank:
            dense_index[level_dim] += coords[level] * block_sizes.get(level_dim, 1)
        else:
            dense_index[block_map[level_dim - rank]] += coords[level]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(dense_index)] = values[position]
    return dense


def _options(op: tflite.Operator, options_type: type) -> Any:
    table = op.BuiltinOptions()
    options = options_type()
    if table is not None:
        options.Init(table.Bytes, table.Pos)
    return options


def _activation(graph: _Graph, source: str, output: str, code: int, where: str) -> None:
    """Apply a TFLite fused activation to `source`, writing `output`."""
    kinds = tflite.ActivationFunctionType
    if code == kinds.NONE:
        graph.node("Identity", [source], output)
    elif code == kinds.RELU:
        graph.node("Relu", [source], output)
    elif code in (kinds.RELU6, kinds.RELU_N1_TO_1):
        low, high = (0.0, 6.0) if code == kinds.RELU6 else (-1.0, 1.0)
        lo = graph.const(np.array(low, np.float32), "clip_min")
        hi = graph.const(np.array(high, np.float32), "clip_max")
        graph.node("Clip", [source, lo, hi], output)
    elif code == kinds.TANH:
        graph.node("Tanh", [source], output)
    else:
        raise UnsupportedOpError(f"fused activation {code} at {where} is not supported")


def _same_pads(in_size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'SAME' padding: the odd pixel goes after, unlike a symmetric ONNX pad."""
    out_size = -(-in_size // stride)
    total = max((out_size - 1) * stride + (kernel - 1) * dilation + 1 - in_size, 0)
    return total // 2, total - total // 2


def _spatial_pads(
    graph: _Graph,
    index: int,
    padding: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> list[int]:
    if padding == tflite.Padding.VALID:
        return [0, 0, 0, 0]
    _, height, width, _ = graph.shape(index)
    top, bottom = _same_pads(height, kernel[0], stride[0], dilation[0])
    left, right = _same_pads(width, kernel[1], stride[1], dilation[1])
    return [top, left, bottom, right]


def _constant_input(graph: _Graph, index: int, op_name: str) -> Array:
    if index not in graph.constants:
        raise UnsupportedOpError(
            f"{op_name} with a computed (non-constant) input {graph.label(index)!r} "
            "is not supported"
        )
    return graph.constants[index]


def _conv(
    graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int], depthwise: bool
) -> None:
    name = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    options_type = tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions
    opts = _options(op, options_type)
    weight = _constant_input(graph, ins[1], name).astype(np.float32)
    in_channels = graph.shape(ins[0])[3]
    if depthwise:
        # TFLite [1, KH, KW, C*M] -> ONNX grouped conv [C*M, 1, KH, KW], group = C.
        kernel = weight.transpose(3, 0, 1, 2)
        group = in_channels
    else:
        # TFLite OHWI -> ONNX OIHW.
        kernel = weight.transpose(0, 3, 1, 2)
        group = 1
    stride = (int(opts.StrideH()), int(opts.StrideW()))
    dilation = (int(opts.DilationHFactor()), int(opts.DilationWFactor()))
    size = (int(kernel.shape[2]), int(kernel.shape[3]))
    inputs = [graph.value(ins[0]), graph.const(kernel, "kernel")]
    if len(ins) > 2 and ins[2] >= 0:
        inputs.append(graph.const(_constant_input(graph, ins[2], name).astype(np.float32), "bias"))
    conv_out = graph.fresh("conv")
    graph.node(
        "Conv",
        inputs,
        conv_out,
        kernel_shape=list(size),
        strides=list(stride),
        dilations=list(dilation),
        group=group,
        pads=_spatial_pads(graph, ins[0], opts.Padding(), size, stride, dilation),
    )
    _activation(graph, conv_out, graph.value(outs[0]), opts.FusedActivationFunction(), name)


def _max_pool(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    opts = _options(op, tflite.Pool2DOptions)
    size = (int(opts.FilterHeight()), int(opts.FilterWidth()))
    stride = (int(opts.StrideH()), int(opts.StrideW()))
    pooled = graph.fresh("pool")
    # ONNX MaxPool pads with -inf, which is what TF 'SAME' pooling means.
    graph.node(
        "MaxPool",
        [graph.value(ins[0])],
        pooled,
        kernel_shape=list(size),
        strides=list(stride),
        pads=_spatial_pads(graph, ins[0], opts.Padding(), size, stride, (1, 1)),
    )
    _activation(graph, pooled, graph.value(outs[0]), opts.FusedActivationFunction(), "MAX_POOL_2D")


def _broadcast_operand(graph: _Graph, index: int, out_rank: int) -> str:
    """Name for a binary-op operand; low-rank constants are laid out against an NCHW output."""
    if index in graph.constants and graph.rank(index) < out_rank == 4:
        array = graph.constants[index].astype(np.float32)
        array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)
        return graph.const(array, "operand")
    if graph.rank(index) != out_rank and out_rank == 4:
        raise UnsupportedOpError(
            f"broadcast of computed tensor {graph.label(index)!r} against a rank-4 tensor"
        )
    return graph.value(index)


def _binary(op_type: str, options_type: type) -> Callable[..., None]:
    def convert(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
        opts = _options(op, options_type)
        out_rank = graph.rank(outs[0])
        result = graph.fresh(op_type.lower())
        graph.node(op_type, [_broadcast_operand(graph, i, out_rank) for i in ins], result)
        _activation(graph, result, graph.value(outs[0]), opts.FusedActivationFunction(), op_type)

    return convert


def _relu(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    graph.node("Relu", [graph.value(ins[0])], graph.value(outs[0]))


def _relu6(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    _activation(
        graph,
        graph.value(ins[0]),
        graph.value(outs[0]),
        tflite.ActivationFunctionType.RELU6,
        "RELU6",
    )


def _logistic(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    graph.node("Sigmoid", [graph.value(ins[0])], graph.value(outs[0]))


def _prelu(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    slope = _broadcast_operand(graph, ins[1], graph.rank(outs[0]))
    graph.node("PRelu", [graph.value(ins[0]), slope], graph.value(outs[0]))


def _pad(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    pads = _constant_input(graph, ins[1], "PAD").astype(np.int64)
    if len(pads) == 4:
        pads = pads[list(NHWC_TO_NCHW)]
    onnx_pads = graph.const(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")
    graph.node("Pad", [graph.value(ins[0]), onnx_pads], graph.value(outs[0]), mode="constant")


def _to_tflite_layout(graph: _Graph, index: int) -> str:
    if graph.rank(index) != 4:
        return graph.value(index)
    return graph.node(
        "Transpose", [graph.value(index)], graph.fresh("nhwc"), perm=list(NCHW_TO_NHWC)
    )


def _reshape(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    # The output shape is static in these models, so it is read from the output tensor rather
    # than from the (optional, sometimes -1 carrying) shape operand.
    source = _to_tflite_layout(graph, ins[0])
    target = graph.const(np.array(graph.shape(outs[0]), np.int64), "shape")
    if graph.rank(outs[0]) == 4:
        flat = graph.node("Reshape", [source, target], graph.fresh("reshaped"))
        graph.node("Transpose", [flat], graph.value(outs[0]), perm=list(NHWC_TO_NCHW))
    else:
        graph.node("Reshape", [source, target], graph.value(outs[0]))


def _concat(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    opts = _options(op, tflite.ConcatenationOptions)
    rank = graph.rank(outs[0])
    axis = int(opts.Axis()) % rank
    if rank == 4:
        axis = NHWC_TO_NCHW.index(axis)
    joined = graph.fresh("concat")
    graph.node("Concat", [graph.value(i) for i in ins], joined, axis=axis)
    _activation(
        graph, joined, graph.value(outs[0]), opts.FusedActivationFunction(), "CONCATENATION"
    )


def _resize_bilinear(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    opts = _options(op, tflite.ResizeBilinearOptions)
    if opts.AlignCorners():
        mode = "align_corners"
    elif opts.HalfPixelCenters():
        mode = "half_pixel"
    else:
        mode = "asymmetric"  # TF1 resize: source = dest * scale, no half-pixel shift
    batch, height, width, channels = graph.shape(outs[0])
    sizes = graph.const(np.array([batch, channels, height, width], np.int64), "sizes")
    graph.node(
        "Resize",
        [graph.value(ins[0]), "", "", sizes],
        graph.value(outs[0]),
        mode="linear",
        coordinate_transformation_mode=mode,
    )


def _depth_to_space(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    opts = _options(op, tflite.DepthToSpaceOptions)
    # TF's depth_to_space channel order (block row, block column, channel) is ONNX's DCR mode.
    graph.node(
        "DepthToSpace",
        [graph.value(ins[0])],
        graph.value(outs[0]),
        blocksize=int(opts.BlockSize()),
        mode="DCR",
    )


def _fold_dequantize(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    source = _constant_input(graph, ins[0], "DEQUANTIZE")
    if source.dtype != np.float16:
        raise UnsupportedOpError(
            f"DEQUANTIZE of {source.dtype} tensor {graph.label(ins[0])!r}: "
            "only float16 is supported"
        )
    graph.constants[outs[0]] = source.astype(np.float32)


def _fold_densify(graph: _Graph, op: tflite.Operator, ins: list[int], outs: list[int]) -> None:
    values = _constant_input(graph, ins[0], "DENSIFY")
    graph.constants[outs[0]] = densify(graph.tensor(ins[0]), values)


_Converter = Callable[[_Graph, tflite.Operator, list[int], list[int]], None]

_CONVERTERS: dict[str, _Converter] = {
    "CONV_2D": lambda g, op, i, o: _conv(g, op, i, o, depthwise=False),
    "DEPTHWISE_CONV_2D": lambda g, op, i, o: _conv(g, op, i, o, depthwise=True),
    "MAX_POOL_2D": _max_pool,
    "ADD": _binary("Add", tflite.AddOptions),
    "MUL": _binary("Mul", tflite.MulOptions),
    "RELU": _relu,
    "RELU6": _relu6,
    "PRELU": _prelu,
    "LOGISTIC": _logistic,
    "PAD": _pad,
    "RESHAPE": _reshape,
    "CONCATENATION": _concat,
    "RESIZE_BILINEAR": _resize_bilinear,
    "DEPTH_TO_SPACE": _depth_to_space,
    "DEQUANTIZE": _fold_dequantize,
    "DENSIFY": _fold_densify,
}


def _op_name(model: tflite.Model, op: tflite.Operator) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    # Schema v3a moved builtin codes past 127 to a new field; take the larger of the two.
    builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
    name = str(_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"))
    if name == "CUSTOM":
        name = f"CUSTOM:{(code.CustomCode() or b'').decode('utf-8', 'replace')}"
    return name


def _value_info(graph: _Graph, index: int, name: str, nhwc: bool) -> onnx.ValueInfoProto:
    shape = graph.shape(index)
    if len(shape) == 4 and not nhwc:
        shape = [shape[i] for i in NHWC_TO_NCHW]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def convert_tflite(
    data: bytes, input_names: Sequence[str], output_names: Sequence[str], graph_name: str
) -> onnx.ModelProto:
    """Convert a single-subgraph float TFLite model to ONNX, renaming its inputs and outputs."""
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        subgraph = model.Subgraphs(0)
    except Exception as err:  # flatbuffers raises assorted low-level errors on bad bytes
        raise ModelBuildError(f"not a readable TFLite flatbuffer: {err}") from err
    if model.SubgraphsLength() != 1:
        raise UnsupportedOpError(f"{model.SubgraphsLength()} subgraphs; only one is supported")
    graph = _Graph(model=model, subgraph=subgraph)
    inputs = [int(i) for i in subgraph.InputsAsNumpy()]
    outputs = [int(i) for i in subgraph.OutputsAsNumpy()]
    if len(inputs) != len(input_names) or len(outputs) != len(output_names):
        raise ModelBuildError(
            f"model has {len(inputs)} inputs and {len(outputs)} outputs; names given for "
            f"{len(input_names)} and {len(output_names)}"
        )
    for index in range(subgraph.TensorsLength()):
        stored = _read_buffer(model, subgraph.Tensors(index))
        if stored is not None:
            graph.constants[index] = stored
    for position in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(position)
        name = _op_name(model, op)
        ins = [int(i) for i in op.InputsAsNumpy()]
        outs = [int(i) for i in op.OutputsAsNumpy()]
        converter = _CONVERTERS.get(name)
        if converter is None:
            raise UnsupportedOpError(
                f"TFLite op {name} (operator #{position}, output tensor "
                f"{graph.label(outs[0])!r}) is not supported by the jifang converter"
            )
        converter(graph, op, ins, outs)

    onnx_inputs = []
    for index, public in zip(inputs, input_names, strict=True):
        onnx_inputs.append(_value_info(graph, index, public, nhwc=False))
        graph.nodes.insert(0, helper.make_node("Identity", [public], [tensor_name(index)]))
    onnx_outputs = []
    for index, public in zip(outputs, output_names, strict=True):
        # Rank-4 outputs go back to NHWC so their raw values compare 1:1 with TFLite's.
        if graph.rank(index) == 4:
            graph.node("Transpose", [graph.value(index)], public, perm=list(NCHW_TO_NHWC))
        else:
            graph.node("Identity", [graph.value(index)], public)
        onnx_outputs.append(_value_info(graph, index, public, nhwc=True))
    onnx_graph = helper.make_graph(
        graph.nodes, graph_name, onnx_inputs, onnx_outputs, initializer=graph.initializers
    )
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="jifang.models.convert.tflite_to_onnx",
    )
    onnx_model.ir_version = ONNX_IR_VERSION
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ModelBuildError(f"converted graph {graph_name!r} is not valid ONNX: {err}") from err
    logger.info(
        "converted %s: %d ONNX nodes, %d initialisers",
        graph_name,
        len(graph.nodes),
        len(graph.initializers),
    )
    return onnx_model
