"""Labelled face sets on disk (`<set>/<identity>/<image>`) and their embeddings."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.engine import FaceEngine
from models.errors import ModelError
from models.runtime.image import read_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp", ".gif"}


@dataclass(frozen=True)
class FaceSet:
    """One labelled set: image paths with their identity labels."""

    name: str
    root: Path
    images: tuple[Path, ...]
    labels: tuple[str, ...]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_set(root: Path) -> FaceSet:
    """A set folder: one sub-folder of images per identity."""
    images: list[Path] = []
    labels: list[str] = []
    for identity in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in _images_in(identity):
            images.append(image)
            labels.append(identity.name)
    if not images:
        raise ValueError(f"{root}: no identity folders with images")
    return FaceSet(root.name, root, tuple(images), tuple(labels))


def find_sets(root: Path) -> list[FaceSet]:
    """`root` is one set (identity folders of images) or a folder of such sets."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if any(_images_in(d) for d in subdirs):
        return [load_set(root)]
    sets = []
    for d in subdirs:
        try:
            sets.append(load_set(d))
        except ValueError:
            logger.info("skipping %s: not a labelled face set", d)
    if not sets:
        raise ValueError(f"{root}: holds no labelled face sets")
    return sets


@dataclass
class ChipSet:
    """Aligned face chips of the images of a set that yielded a face."""

    name: str
    chips: npt.NDArray[np.uint8]
    """[N, size, size, 3] RGB chips as the recognizer takes them."""
    labels: list[str]
    paths: list[Path]
    images: int
    methods: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    root: Path | None = None
    """The set's folder."""


@dataclass
class EmbeddedSet:
    """Embeddings of the images of a set that yielded a face."""

    name: str
    embeddings: npt.NDArray[np.float32]
    labels: list[str]
    paths: list[Path]
    images: int
    methods: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    @property
    def failure_to_acquire(self) -> float:
        """Fraction of images where the detector found no face (even after padding)."""
        failed = self.images - self.methods["detected"] - self.methods["padded"]
        return failed / self.images if self.images else 0.0


def chip_set(
    engine: FaceEngine, face_set: FaceSet, whole_crop: bool = True, progress: bool = True
) -> ChipSet:
    """Acquire and align every image of a set (tight crops are padded, then whole-cropped)."""
    size = engine.manifest.embedding.chip_size
    chips: list[npt.NDArray[np.uint8]] = []
    out = ChipSet(
        face_set.name,
        np.zeros((0, size, size, 3), np.uint8),
        [],
        [],
        len(face_set.images),
        root=face_set.root,
    )
    pairs = zip(face_set.images, face_set.labels, strict=True)
    for path, label in tqdm(
        pairs,
        total=len(face_set.images),
        desc=face_set.name,
        disable=not progress,
        unit="img",
        leave=False,
    ):
        try:
            image = read_image(str(path))
        except ModelError as err:
            out.unreadable.append(str(path))
            out.methods["unreadable"] += 1
            logger.warning("%s", err)
            continue
        acquired = engine.acquire(image, whole_crop=whole_crop)
        if acquired is None:
            out.methods["none"] += 1
            continue
        out.methods[acquired.method] += 1
        chips.append(engine.align(acquired.image, acquired.face))
        out.labels.append(label)
        out.paths.append(path)
    if chips:
        out.chips = np.stack(chips)
    return out


EMBED_BATCH = 32
"""Chips per recognizer call when embedding a whole set (bounded memory, same results)."""


def embed_chip_set(
    chips: ChipSet, embed: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.float32]], dim: int
) -> EmbeddedSet:
    """Embed a chip set with `embed` (e.g. `FaceEngine.embed_chips`), in batches."""
    parts = [
        embed(chips.chips[i : i + EMBED_BATCH]) for i in range(0, len(chips.chips), EMBED_BATCH)
    ]
    embeddings = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return EmbeddedSet(
        chips.name,
        np.asarray(embeddings, np.float32),
        list(chips.labels),
        list(chips.paths),
        chips.images,
        Counter(chips.methods),
        list(chips.unreadable),
    )


def embed_set(
    engine: FaceEngine, face_set: FaceSet, whole_crop: bool = True, progress: bool = True
) -> EmbeddedSet:
    """Acquire, align and embed every image of a set."""
    chips = chip_set(engine, face_set, whole_crop=whole_crop, progress=progress)
    return embed_chip_set(chips, engine.embed_chips, engine.manifest.embedding.dim)
