"""The onnxruntime wrapper around the dlib recognizer graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models.convert.dlib_resnet import (
    DlibNet,
    FcLayer,
    InputLayer,
    LayerKind,
    Node,
    PoolLayer,
    build_onnx,
    write_onnx,
)
from models.errors import ModelError
from models.runtime.dlib_recognizer import DlibResNetRecognizer

MEAN = (122.782, 117.001, 104.298)


@pytest.fixture(scope="module")
def fc_weights() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(3, 128)).astype(np.float32)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory, fc_weights: np.ndarray) -> Path:
    """A small graph with the recognizer's contract: global mean colour times a matrix."""
    net = DlibNet(
        nodes=(
            Node(0, InputLayer(mean_rgb=MEAN, nr=150, nc=150), ()),
            Node(1, PoolLayer(LayerKind.AVG_POOL, (0, 0), (1, 1), (0, 0)), (0,)),
            Node(2, FcLayer(weights=fc_weights, bias=None), (1,)),
        )
    )
    path = tmp_path_factory.mktemp("recognizer") / "tiny.onnx"
    write_onnx(build_onnx(net), path)
    return path


@pytest.fixture(scope="module")
def recognizer(model_path: Path) -> DlibResNetRecognizer:
    return DlibResNetRecognizer(model_path, threads=1)


def _chips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 150, 150, 3), dtype=np.uint8)


def test_embeds_rgb_chips_in_order(
    recognizer: DlibResNetRecognizer, fc_weights: np.ndarray
) -> None:
    chips = _chips(3)
    got = recognizer.embed_chips(chips)
    # Channel order matters: the graph subtracts dlib's R, G, B means from planes 0, 1, 2.
    mean_rgb = chips.reshape(3, -1, 3).astype(np.float64).mean(axis=1)
    want = ((mean_rgb - np.asarray(MEAN)) / 256.0) @ fc_weights
    assert got.dtype == np.float32
    assert got.shape == (3, 128)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_empty_batch_gives_empty_result(recognizer: DlibResNetRecognizer) -> None:
    out = recognizer.embed_chips(np.zeros((0, 150, 150, 3), dtype=np.uint8))
    assert out.shape == (0, 128)


@pytest.mark.parametrize(
    "shape",
    [(150, 150, 3), (1, 150, 150), (1, 3, 150, 150), (1, 112, 112, 3), (2, 150, 150, 4)],
)
def test_wrong_shape_is_a_model_error(
    recognizer: DlibResNetRecognizer, shape: tuple[int, ...]
) -> None:
    with pytest.raises(ModelError, match=r"\[N, 150, 150, 3\]"):
        recognizer.embed_chips(np.zeros(shape, dtype=np.uint8))


def test_float_chips_are_rejected(recognizer: DlibResNetRecognizer) -> None:
    with pytest.raises(ModelError, match="uint8"):
        recognizer.embed_chips(np.zeros((1, 150, 150, 3), dtype=np.float32))


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        DlibResNetRecognizer(tmp_path / "absent.onnx")


def test_corrupt_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(ModelError, match="cannot load recognizer") as info:
        DlibResNetRecognizer(path)
    assert info.value.__cause__ is not None


def test_bad_thread_count_is_a_model_error(model_path: Path) -> None:
    with pytest.raises(ModelError, match="threads"):
        DlibResNetRecognizer(model_path, threads=0)


def test_graph_without_recognizer_contract_is_a_model_error(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 150, 150])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 150, 150])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "other.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelError, match="not a dlib recognizer graph"):
        DlibResNetRecognizer(path)
