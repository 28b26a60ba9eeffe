"""Packs a user supplies: insightface-format packs and user detectors, through one interface."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import (
    EmbeddingSpec,
    FileEntry,
    PackManifest,
    compute_contract_id,
    load_manifest,
    sha256_file,
    write_manifest,
)
from models.store import pack_manifest
from models.types import Task
from tests.models import faces

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


def _shared(relative: str) -> Path:
    path = SHARED_MODELS / relative
    if not path.is_file():
        pytest.skip(f"third-party model file not present: {path}")
    return path


def export_arcface_format(path: Path, dim: int = 512) -> None:
    """A small recognizer in insightface's ArcFace format: [N,3,112,112] in, [N,dim] out."""
    rng = np.random.default_rng(7)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.1, (16, 3, 8, 8)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16 * 14 * 14, dim)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "w1"], ["c1"], strides=[8, 8]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f1"]),
        helper.make_node("MatMul", ["f1", "w2"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_format_test",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", dim])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_insightface_pack_loads_through_the_same_interface(tmp_path: Path) -> None:
    pack = tmp_path / "buffalo_test"
    pack.mkdir()
    shutil.copy(_shared("scrfd_noncommercial/scrfd_500m_bnkps.onnx"), pack / "det_500m.onnx")
    export_arcface_format(pack / "w600k_mbf.onnx")
    (pack / "genderage.onnx").write_bytes(b"unused by jifang")

    # The schema module reads manifest.yaml only; the store recognises the vendor's folder.
    with pytest.raises(ModelError, match=r"not a model pack \(no manifest\.yaml\)"):
        load_manifest(pack)
    manifest = pack_manifest(pack)
    assert not manifest.commercial_use
    assert all("non-commercial" in f.license for f in manifest.files)
    assert {f.wrapper for f in manifest.files} == {"insightface_scrfd", "insightface_arcface"}

    engine = FaceEngine(pack)
    image = faces.astronaut()
    found = engine.detect(image)
    assert len(found) == 1 and found[0].landmark_scheme == "arcface5"
    chip = engine.align(image, found[0])
    assert chip.shape == (112, 112, 3)
    vector = engine.embed(image, found[0])
    assert vector.shape == (512,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5


def test_unknown_file_in_an_insightface_pack_is_named(tmp_path: Path) -> None:
    pack = tmp_path / "odd"
    pack.mkdir()
    shutil.copy(_shared("scrfd_noncommercial/scrfd_500m_bnkps.onnx"), pack / "det_500m.onnx")
    (pack / "mystery.onnx").write_bytes(b"?")
    with pytest.raises(ModelError, match=r"odd/mystery\.onnx: not a known insightface file"):
        pack_manifest(pack)


def _user_detector_pack(
    default_pack: Path, target: Path, detector: Path, wrapper: str, landmark_start: str
) -> Path:
    """The default pack with its detector swapped for a user-supplied one, via a manifest."""
    shutil.copytree(default_pack, target)
    shutil.copy(detector, target / detector.name)
    (target / "detector.onnx").unlink()
    base = load_manifest(default_pack)
    files = []
    for entry in base.files:
        if entry.task == Task.DETECTOR:
            entry = FileEntry(
                path=detector.name,
                task=Task.DETECTOR,
                wrapper=wrapper,
                sha256=sha256_file(target / detector.name),
                license="see LICENSE",
                commercial_use=True,
                source=f"user-supplied {detector.name}",
            )
        elif entry.task == Task.LANDMARKS:
            entry = entry.model_copy(update={"params": {"start": landmark_start}})
        files.append(entry)
    spec: EmbeddingSpec = base.embedding
    manifest = PackManifest(
        name=target.name,
        version="user",
        files=tuple(files),
        embedding=spec,
        contract_id=compute_contract_id(files, spec),
    )
    write_manifest(target, manifest)
    return target


@pytest.mark.parametrize(
    ("relative", "wrapper", "start"),
    [
        ("yunet/yunet_s_640_640.onnx", "yunet", "eyes"),
        ("yunet/yunet_n_320_320.onnx", "yunet", "eyes"),
        ("ultralight/version-RFB-320.onnx", "ultralight", "box"),
        ("ultralight/version-slim-320.onnx", "ultralight", "box"),
    ],
)
def test_user_detectors_load_via_manifest(
    default_pack: Path, tmp_path: Path, relative: str, wrapper: str, start: str
) -> None:
    pack = _user_detector_pack(
        default_pack, tmp_path / "user-pack", _shared(relative), wrapper, start
    )
    engine = FaceEngine(pack)
    assert engine.contract_id == load_manifest(default_pack).contract_id
    image = faces.astronaut()
    found = engine.detect(image)
    assert len(found) == 1
    reference = FaceEngine(default_pack)
    ref_face = reference.detect(image)[0]
    same = engine.compare(engine.embed(image, found[0]), reference.embed(image, ref_face))
    assert same > 0.95, f"{wrapper} framing drifted from the default pipeline ({same:.3f})"


def test_manifest_with_wrong_yaml_is_reported(tmp_path: Path, default_pack: Path) -> None:
    pack = tmp_path / "broken"
    shutil.copytree(default_pack, pack)
    data = yaml.safe_load((pack / "manifest.yaml").read_text())
    del data["embedding"]
    (pack / "manifest.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelError, match="embedding: Field required"):
        load_manifest(pack)
