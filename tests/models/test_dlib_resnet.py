"""Parsing dlib's ResNet v1 file and the ONNX graph built from it."""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from models.convert.dlib_format import DlibFormatError
from models.convert.dlib_resnet import (
    AddPrevLayer,
    ConLayer,
    DlibNet,
    FcLayer,
    InputLayer,
    LayerKind,
    Node,
    ReluLayer,
    build_onnx,
    convert_dlib_resnet,
    parse_dlib_resnet,
    write_onnx,
)

RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
LFW_DIR = Path("/work/shared/data/faces/lfw_7people")
PARITY_TOLERANCE = 1e-4


def _model_file(name: str) -> Path:
    pytest.importorskip("face_recognition_models")
    path = Path(str(importlib.resources.files("face_recognition_models") / "models" / name))
    if not path.is_file():
        pytest.skip(f"{name} is not in face_recognition_models")
    return path


def _run(model: onnx.ModelProto, chips: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(["descriptor"], {"chip": chips})
    return np.asarray(out)


# ---------------------------------------------------------------------------------------
# A tiny hand-serialized network: same wrappers and quirks as ResNet v1, small enough to
# check against plain numpy without dlib.


def _int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def _str(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _float(value: float) -> bytes:
    numerator, denominator = value.as_integer_ratio()
    return _int(numerator) + _int(-(denominator.bit_length() - 1))


def _tensor(values: np.ndarray) -> bytes:
    shape = [int(values.size), 1, 1, 1]
    return _int(2) + b"".join(_int(d) for d in shape) + values.astype("<f4").tobytes()


def _alias(*shape: int) -> bytes:
    return _int(1) + b"".join(_int(d) for d in shape)


EMPTY_TAIL = b"110" + 3 * (_int(2) + 4 * _int(0))


def _add_layer(subnet: bytes, details: bytes) -> bytes:
    return _int(2) + subnet + details + EMPTY_TAIL


def _wrapper(subnet: bytes) -> bytes:
    return _int(1) + subnet


def _con(weights: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> bytes:
    o, i, kh, kw = weights.shape
    return (
        _str("con_4")
        + _tensor(np.concatenate([weights.ravel(), bias]))
        + b"".join(_int(v) for v in (o, kh, kw, stride, stride, pad, pad))
        + _alias(o, i, kh, kw)
        + _alias(1, o, 1, 1)
        + 4 * _float(1.0)
    )


def _affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    k = gamma.size
    return (
        _str("affine_")
        + _tensor(np.concatenate([gamma, beta]))
        + _alias(1, k, 1, 1)
        + _alias(1, k, 1, 1)
        + _int(0)
    )


def _pool(name: str, window: int, stride: int) -> bytes:
    return _str(name) + b"".join(_int(v) for v in (window, window, stride, stride, 0, 0))


TINY_MEAN = (120.5, 110.25, 100.0)
TINY_SIZE = 8


def _tiny_net_bytes(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """input 8x8 -> con 3x3/1 pad 1 -> affine -> relu -> [tag1] -> con 3x3/2 (3x3 out)
    -> [tag2][skip1] -> avg_pool 2/2 (4x4 out) -> add_prev2 -> relu -> global avg -> fc."""
    w = {
        "c1_w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "c1_b": rng.normal(size=4).astype(np.float32),
        "gamma": rng.normal(size=4).astype(np.float32),
        "beta": rng.normal(size=4).astype(np.float32),
        "c2_w": rng.normal(size=(4, 4, 3, 3)).astype(np.float32),
        "c2_b": rng.normal(size=4).astype(np.float32),
        "fc_w": rng.normal(size=(4, 5)).astype(np.float32),
    }
    input_details = (
        _str("input_rgb_image_sized")
        + b"".join(_float(m) for m in TINY_MEAN)
        + _int(TINY_SIZE)
        + _int(TINY_SIZE)
    )
    net = _int(3) + input_details + _con(w["c1_w"], w["c1_b"], 1, 1) + EMPTY_TAIL + _int(1)
    net = _add_layer(net, _affine(w["gamma"], w["beta"]))
    net = _add_layer(net, _str("relu_"))
    net = _add_layer(_wrapper(net), _con(w["c2_w"], w["c2_b"], 2, 0))
    net = _add_layer(_wrapper(_wrapper(net)), _pool("avg_pool_2", 2, 2))
    net = _add_layer(net, _str("add_prev_"))
    net = _add_layer(net, _str("relu_"))
    net = _add_layer(net, _pool("avg_pool_2", 0, 1))
    fc = (
        _str("fc_2")
        + _int(5)
        + _int(4)
        + _tensor(w["fc_w"].ravel())
        + _alias(4, 5, 1, 1)
        + _alias(1, 5, 1, 1)
        + _int(1)
        + 4 * _float(1.0)
    )
    net = _add_layer(net, fc)
    loss = _str("loss_metric_2") + _float(0.25) + _float(0.5)
    return _int(1) + loss + net, w


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2]
    rows = 1 + (x.shape[1] - k) // stride
    cols = 1 + (x.shape[2] - k) // stride
    out = np.empty((w.shape[0], rows, cols))
    for r in range(rows):
        for c in range(cols):
            patch = x[:, r * stride : r * stride + k, c * stride : c * stride + k]
            out[:, r, c] = np.tensordot(w, patch, axes=3) + b
    return out


def _np_tiny_net(chip: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    x = (chip.astype(np.float64) - np.asarray(TINY_MEAN).reshape(3, 1, 1)) / 256.0
    x = _np_conv(x, w["c1_w"], w["c1_b"], 1, 1)
    tag1 = np.maximum(x * w["gamma"].reshape(4, 1, 1) + w["beta"].reshape(4, 1, 1), 0.0)
    tag2 = _np_conv(tag1, w["c2_w"], w["c2_b"], 2, 0)  # 3x3
    pooled = tag1.reshape(4, 4, 2, 4, 2).mean(axis=(2, 4))  # 4x4
    padded = np.zeros_like(pooled)
    padded[:, :3, :3] = tag2  # dlib zero-pads the smaller map at the bottom and right
    x = np.maximum(pooled + padded, 0.0)
    return x.mean(axis=(1, 2)) @ w["fc_w"]


def test_tiny_net_parses_with_wrappers_resolved() -> None:
    raw, _ = _tiny_net_bytes(np.random.default_rng(0))
    net = parse_dlib_resnet(raw)
    kinds = [node.layer.kind for node in net.nodes]
    assert kinds == [
        LayerKind.INPUT,
        LayerKind.CON,
        LayerKind.AFFINE,
        LayerKind.RELU,
        LayerKind.CON,
        LayerKind.AVG_POOL,
        LayerKind.ADD_PREV,
        LayerKind.RELU,
        LayerKind.AVG_POOL,
        LayerKind.FC,
        LayerKind.LOSS,
    ]
    add = net.nodes[6]
    assert isinstance(add.layer, AddPrevLayer)
    assert add.layer.tag == 2
    # add_prev2 sums the skip path (avg_pool over tag1 = relu) and tag2 (the strided con).
    assert add.inputs == (5, 4)
    assert net.nodes[5].inputs == (3,)


def test_tiny_net_onnx_matches_numpy_reference() -> None:
    rng = np.random.default_rng(1)
    raw, weights = _tiny_net_bytes(rng)
    model = convert_dlib_resnet(raw)
    chips = rng.integers(0, 256, size=(3, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    got = _run(model, chips)
    want = np.stack([_np_tiny_net(chip, weights) for chip in chips])
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_graph_must_end_in_fc() -> None:
    net = DlibNet(
        nodes=(
            Node(0, InputLayer(mean_rgb=TINY_MEAN, nr=TINY_SIZE, nc=TINY_SIZE), ()),
            Node(1, ReluLayer(), (0,)),
        )
    )
    with pytest.raises(DlibFormatError, match="an fc layer before the loss"):
        build_onnx(net)


def test_conversion_is_deterministic_and_records_source() -> None:
    raw, _ = _tiny_net_bytes(np.random.default_rng(5))
    first = convert_dlib_resnet(raw)
    assert first.SerializeToString() == convert_dlib_resnet(raw).SerializeToString()
    props = {prop.key: prop.value for prop in first.metadata_props}
    assert props["source_sha256"] == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("cut", [0, 1, 17, 100, -30, -1])
def test_truncated_file_raises_format_error(cut: int) -> None:
    raw, _ = _tiny_net_bytes(np.random.default_rng(2))
    with pytest.raises(DlibFormatError, match=r"at byte \d+: expected"):
        parse_dlib_resnet(raw[:cut])


def test_trailing_bytes_are_rejected() -> None:
    raw, _ = _tiny_net_bytes(np.random.default_rng(3))
    with pytest.raises(DlibFormatError, match="end of file") as info:
        parse_dlib_resnet(raw + b"\x00")
    assert info.value.offset == len(raw)


def test_unknown_layer_is_named() -> None:
    raw, _ = _tiny_net_bytes(np.random.default_rng(4))
    bad = raw.replace(_str("relu_"), _str("gelu_"), 1)
    with pytest.raises(DlibFormatError, match="found 'gelu_'"):
        parse_dlib_resnet(bad)


# ---------------------------------------------------------------------------------------
# The real recognizer file.


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    return _model_file(RECOGNIZER_FILE).read_bytes()


def test_real_file_layer_structure(dat_bytes: bytes) -> None:
    net = parse_dlib_resnet(dat_bytes)
    counts = net.layer_counts()
    assert counts == {
        LayerKind.INPUT: 1,
        LayerKind.CON: 29,
        LayerKind.AFFINE: 29,
        LayerKind.RELU: 29,
        LayerKind.ADD_PREV: 14,
        LayerKind.MAX_POOL: 1,
        LayerKind.AVG_POOL: 5,
        LayerKind.FC: 1,
        LayerKind.LOSS: 1,
    }
    assert 5_500_000 < net.parameter_count() < 5_700_000
    fc = net.nodes[-2].layer
    assert isinstance(fc, FcLayer)
    assert fc.weights.shape == (256, 128)
    assert fc.bias is None
    first = net.nodes[1].layer
    assert isinstance(first, ConLayer)
    assert first.weights.shape == (32, 3, 7, 7)
    assert first.stride == (2, 2)
    assert first.pad == (0, 0)
    assert sorted(node.layer.tag for node in net.nodes if isinstance(node.layer, AddPrevLayer)) == (
        [1] * 10 + [2] * 4
    )


def test_real_file_graph_contract(dat_bytes: bytes, tmp_path: Path) -> None:
    model = convert_dlib_resnet(dat_bytes)
    path = tmp_path / "recognizer.onnx"
    write_onnx(model, path)
    loaded = onnx.load(str(path))
    assert loaded.opset_import[0].version == 17
    (chip,) = loaded.graph.input
    (descriptor,) = loaded.graph.output
    assert chip.name == "chip"
    assert descriptor.name == "descriptor"
    assert chip.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in chip.type.tensor_type.shape.dim]
    assert dims == ["N", 3, 150, 150]
    assert [d.dim_param or d.dim_value for d in descriptor.type.tensor_type.shape.dim] == ["N", 128]
    out = _run(loaded, np.full((2, 3, 150, 150), 128.0, dtype=np.float32))
    assert out.shape == (2, 128)
    assert np.isfinite(out).all()


def test_real_file_truncated_names_offset(dat_bytes: bytes) -> None:
    cut = len(dat_bytes) // 2
    with pytest.raises(DlibFormatError) as info:
        parse_dlib_resnet(dat_bytes[:cut])
    assert 0 < info.value.offset <= cut


# ---------------------------------------------------------------------------------------
# Parity with dlib itself on real face chips.


def _real_images(load: Callable[[str], np.ndarray]) -> list[tuple[str, np.ndarray]]:
    data = pytest.importorskip("skimage.data")
    images = [("astronaut", np.asarray(data.astronaut()))]
    if LFW_DIR.is_dir():
        # A handful: the first photo of each person, in a stable order.
        for person in sorted(p for p in LFW_DIR.iterdir() if p.is_dir()):
            photos = sorted(person.glob("*.jpg"))
            if photos:
                images.append((photos[0].name, load(str(photos[0]))))
    return images


@pytest.mark.slow
def test_parity_with_dlib_on_real_chips(dat_bytes: bytes, tmp_path: Path) -> None:
    dlib = pytest.importorskip("dlib")
    from models.runtime.dlib_recognizer import DlibResNetRecognizer

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(_model_file(LANDMARKS_FILE)))
    reference = dlib.face_recognition_model_v1(str(_model_file(RECOGNIZER_FILE)))

    names: list[str] = []
    chips: list[np.ndarray] = []
    for name, image in _real_images(dlib.load_rgb_image):
        faces = detector(image, 1)
        if not faces:
            assert name != "astronaut", "dlib found no face in skimage's astronaut"
            continue
        shape = landmarks(image, faces[0])
        chips.append(np.asarray(dlib.get_face_chip(image, shape, size=150, padding=0.25)))
        names.append(name)
    want = np.stack(
        [np.asarray(reference.compute_face_descriptor(chip), dtype=np.float64) for chip in chips]
    )

    path = tmp_path / "recognizer.onnx"
    write_onnx(convert_dlib_resnet(dat_bytes), path)
    recognizer = DlibResNetRecognizer(path, threads=2)
    got = recognizer.embed_chips(np.stack(chips).astype(np.uint8))

    diff = np.abs(got.astype(np.float64) - want).max(axis=1)
    worst = dict(zip(names, diff.tolist(), strict=True))
    assert diff.max() <= PARITY_TOLERANCE, worst
    # Batch and single runs must agree too (dynamic batch, no cross-sample leakage).
    single = recognizer.embed_chips(np.stack(chips[:1]).astype(np.uint8))
    np.testing.assert_allclose(single[0], got[0], atol=1e-5)
