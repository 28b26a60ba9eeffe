"""The linear adapter wrapper: real ONNX sessions, the engine path, and bad graphs/params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import FileEntry, load_manifest, sha256_file
from models.runtime.adapter import LinearAdapter
from models.runtime.registry import build_component
from models.types import Task
from tests.models.faces import astronaut, cameraman, variants
from training.adapt import (
    AdapterMethod,
    AdapterProvenance,
    FitData,
    LinearMap,
    build_adapted_pack,
    export_onnx,
)


def _random_map(seed: int = 0, out_dim: int = 128) -> LinearMap:
    rng = np.random.default_rng(seed)
    weight = np.eye(128)[:, :out_dim] + 0.1 * rng.standard_normal((128, out_dim))
    bias = 0.05 * rng.standard_normal(out_dim)
    return LinearMap(weight, bias, AdapterMethod.WCCN, FitData(10, 5, 5))


def _entry(path: Path, params: dict[str, object]) -> FileEntry:
    return FileEntry(
        path=path.name,
        task=Task.ADAPTER,
        wrapper="linear_adapter",
        sha256=sha256_file(path),
        license="LicenseRef-test",
        commercial_use=False,
        source="test",
        params=params,
    )


def test_onnx_adapter_matches_numpy_reference(tmp_path: Path) -> None:
    linear = _random_map(out_dim=64)
    path = export_onnx(linear, tmp_path / "adapter.onnx")
    adapter = build_component(
        tmp_path, _entry(path, {"input_dim": 128, "output_dim": 64}), 1, LinearAdapter
    )
    raw = np.random.default_rng(1).standard_normal((7, 128)).astype(np.float32) * 1.7
    out = adapter.transform(raw)
    assert out.shape == (7, 64)
    unit = out / np.linalg.norm(out, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, linear.apply(raw), atol=1e-5)
    # The input is normalised inside the graph: scaling a raw embedding changes nothing.
    np.testing.assert_allclose(adapter.transform(raw * 3.0), out, atol=1e-5)


def test_adapter_rejects_wrong_input(tmp_path: Path) -> None:
    path = export_onnx(_random_map(), tmp_path / "adapter.onnx")
    adapter = LinearAdapter(path, 128, 128)
    with pytest.raises(ModelError, match="takes 128-d embeddings, got 64-d"):
        adapter.transform(np.ones((2, 64), np.float32))
    with pytest.raises(ModelError, match="2-D"):
        adapter.transform(np.ones(128, np.float32))
    assert adapter.transform(np.zeros((0, 128), np.float32)).shape == (0, 128)


def test_adapter_fails_closed_on_non_finite_output(tmp_path: Path) -> None:
    path = export_onnx(_random_map(), tmp_path / "adapter.onnx")
    adapter = LinearAdapter(path, 128, 128)
    raw = np.ones((1, 128), np.float32)
    raw[0, 3] = np.nan
    with pytest.raises(ModelError, match="non-finite"):
        adapter.transform(raw)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"output_dim": 128}, "'input_dim' must be an integer"),
        ({"input_dim": 128, "output_dim": True}, "'output_dim' must be an integer"),
        ({"input_dim": 128, "output_dim": 64}, r"output shape \['N', 128\], manifest says"),
        ({"input_dim": 128, "output_dim": 128, "scale": 2}, "unknown adapter params"),
    ],
)
def test_bad_params_name_the_file(tmp_path: Path, params: dict[str, object], message: str) -> None:
    path = export_onnx(_random_map(), tmp_path / "adapter.onnx")
    with pytest.raises(ModelError, match=message) as info:
        build_component(tmp_path, _entry(path, params), 1, LinearAdapter)
    assert "adapter.onnx" in str(info.value)


def test_graph_with_other_names_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "adapter.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match="not an adapter graph"):
        LinearAdapter(path, 128, 128)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "adapter.onnx"
    path.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="adapter.onnx"):
        LinearAdapter(path, 128, 128)
    with pytest.raises(ModelError, match="not found"):
        LinearAdapter(tmp_path / "missing.onnx", 128, 128)


def test_engine_runs_adapted_pack(default_pack: Path, engine: FaceEngine, tmp_path: Path) -> None:
    linear = _random_map(seed=3, out_dim=96)
    pack = build_adapted_pack(
        default_pack, linear, tmp_path, "jifang-open-test", AdapterProvenance(source="test")
    )
    adapted = FaceEngine(pack, threads=1)
    assert adapted.adapter is not None
    assert adapted.contract_id != engine.contract_id
    assert load_manifest(pack).embedding.dim == 96
    image = astronaut()
    acquired = adapted.acquire(image)
    assert acquired is not None
    vector = adapted.embed(acquired.image, acquired.face)
    chip = adapted.align(acquired.image, acquired.face)
    raw = engine.recognizer.embed_chips(chip[None])
    assert vector.shape == (96,)
    np.testing.assert_allclose(vector, linear.apply(raw)[0], atol=1e-5)
    # The map is near the identity, so the same person still matches best.
    same = [adapted.acquire(v) for v in variants(image)[1:]]
    other = adapted.acquire(cameraman())
    assert other is not None and all(a is not None for a in same)
    other_vec = adapted.embed(other.image, other.face)
    for a in same:
        assert a is not None
        v = adapted.embed(a.image, a.face)
        assert adapted.compare(vector, v) > adapted.compare(vector, other_vec)
