"""Write trained models into packs the edge loads unchanged (files copied from a base pack)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from models.build_default import RECOGNIZER_DAT, read_dlib_file
from models.convert.dlib_resnet import (
    AffineLayer,
    ConLayer,
    DlibNet,
    FcLayer,
    InputLayer,
    Layer,
    parse_dlib_resnet,
)
from models.manifest import FileEntry, PackManifest
from models.store import verified_manifest
from models.types import Task
from training.common import TrainingError

logger = logging.getLogger(__name__)

DLIB_WRAPPER = "dlib_resnet"


def copy_files(base_dir: Path, base: PackManifest, work: Path, skip: set[Task]) -> list[FileEntry]:
    """Copy every present file of the base pack whose task is not in `skip`; their entries."""
    entries: list[FileEntry] = []
    for entry in base.files:
        if entry.task in skip:
            continue
        source = base_dir / entry.path
        if not source.is_file():
            if entry.optional:
                continue
            raise TrainingError(f"base pack {base_dir}: {entry.path} is missing")
        target = work / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        entries.append(entry)
    return entries


@contextmanager
def staged_pack(out: Path, force: bool) -> Iterator[Path]:
    """A temporary folder beside `out` that replaces it only when the block succeeds."""
    if out.exists() and not force:
        raise TrainingError(f"--out {out} exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.build-") as tmp:
        work = Path(tmp)
        yield work
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
        # TemporaryDirectory's cleanup must not fail now that the folder has moved.
        work.mkdir()
    logger.info("wrote pack %s", out)


def _init(inits: dict[str, np.ndarray], name: str, like: np.ndarray) -> np.ndarray:
    value = inits.get(name)
    if value is None:
        raise TrainingError(f"recognizer graph has no initializer {name!r}")
    if value.size != like.size:
        raise TrainingError(f"initializer {name!r} has {value.size} values, expected {like.size}")
    return np.ascontiguousarray(value.reshape(like.shape).astype(np.float32))


def dlib_net_from_pack(pack_dir: Path, wheel_cache: Path | None = None) -> DlibNet:
    """The pack's dlib ResNet recognizer as layer records, with the pack's own weights.

    The layer structure comes from dlib's model file (the template the edge's converter
    reads); every weight is then taken from the pack's ONNX graph by the node names the
    converter gives them, so a pack fine-tuned earlier can be fine-tuned again.
    """
    manifest = verified_manifest(pack_dir)
    entry = manifest.file(Task.RECOGNIZER)
    if entry is None or entry.wrapper != DLIB_WRAPPER:
        found = None if entry is None else entry.wrapper
        raise TrainingError(
            f"base pack {pack_dir}: recognizer wrapper is {found!r}; fine-tuning starts from a "
            f"{DLIB_WRAPPER!r} recognizer"
        )
    template = parse_dlib_resnet(read_dlib_file(RECOGNIZER_DAT, wheel_cache))
    graph = onnx.load(str(pack_dir / entry.path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for node in template.nodes:
        name = f"n{node.index:03d}_{node.layer.kind.value}"
        layer: Layer = node.layer
        if isinstance(layer, ConLayer):
            layer = ConLayer(
                weights=_init(inits, f"{name}_w", layer.weights),
                bias=_init(inits, f"{name}_b", layer.bias),
                stride=layer.stride,
                pad=layer.pad,
            )
        elif isinstance(layer, AffineLayer):
            layer = AffineLayer(
                gamma=_init(inits, f"{name}_gamma", layer.gamma),
                beta=_init(inits, f"{name}_beta", layer.beta),
                mode=layer.mode,
            )
        elif isinstance(layer, FcLayer):
            bias = None if layer.bias is None else _init(inits, f"{name}_b", layer.bias)
            layer = FcLayer(weights=_init(inits, f"{name}_w", layer.weights), bias=bias)
        elif isinstance(layer, InputLayer):
            mean = _init(inits, f"{name}_mean", np.zeros(3, np.float32))
            layer = InputLayer(
                mean_rgb=(float(mean[0]), float(mean[1]), float(mean[2])), nr=layer.nr, nc=layer.nc
            )
        nodes.append(type(node)(node.index, layer, node.inputs, node.offset))
    logger.info("loaded %d recognizer weights from %s", len(inits), pack_dir / entry.path)
    return DlibNet(nodes=tuple(nodes))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine similarity between two [N,D] arrays."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    num = np.sum(a64 * b64, axis=1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


def skimage_faces(chip_of: Callable[[np.ndarray], np.ndarray | None]) -> list[np.ndarray]:
    """Chips of the real face photos that ship with scikit-image, when it is installed."""
    try:
        from skimage import data as skdata
    except ImportError:
        return []
    import cv2

    photos = [
        np.ascontiguousarray(skdata.astronaut()[:, :, ::-1]),
        cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2BGR),
    ]
    chips = [chip_of(np.asarray(p, np.uint8)) for p in photos]
    return [c for c in chips if c is not None]
