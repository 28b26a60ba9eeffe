"""Training data: identity folders turned into aligned chips, and live/spoof folders of crops."""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from calibration.datasets import IMAGE_SUFFIXES, find_sets
from models.engine import FaceEngine
from models.errors import ModelError
from models.runtime.image import read_image

logger = logging.getLogger(__name__)

Chips = npt.NDArray[np.uint8]
"""Aligned RGB chips [N,H,W,3] uint8."""

LIVE_FOLDER = "live"
SPOOF_PREFIX = "spoof"
"""A liveness set holds `live/` and one or more `spoof*/` folders (spoof_print, spoof_replay)."""


@dataclass(frozen=True)
class Augment:
    """Random changes applied to training chips and crops (never to evaluation ones)."""

    flip: bool = True
    rotate_deg: float = 5.0
    shift: float = 0.03
    scale: float = 0.05
    brightness: float = 0.25
    contrast: float = 0.25
    gray_p: float = 0.2

    @staticmethod
    def add_args(p: argparse.ArgumentParser, defaults: Augment) -> None:
        """A trainer's augmentation options, with that trainer's defaults."""
        p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=defaults.flip)
        p.add_argument("--rotate-deg", type=float, default=defaults.rotate_deg)
        p.add_argument("--shift", type=float, default=defaults.shift, help="fraction of the image")
        p.add_argument("--scale-jitter", type=float, default=defaults.scale)
        p.add_argument("--brightness", type=float, default=defaults.brightness)
        p.add_argument("--contrast", type=float, default=defaults.contrast)
        p.add_argument("--gray-p", type=float, default=defaults.gray_p)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Augment:
        """The augmentation the options of `add_args` describe."""
        return cls(
            args.flip,
            args.rotate_deg,
            args.shift,
            args.scale_jitter,
            args.brightness,
            args.contrast,
            args.gray_p,
        )

    def transform(self) -> v2.Transform:
        """A torchvision v2 pipeline over uint8 CHW tensors."""
        steps: list[v2.Transform] = []
        if self.flip:
            steps.append(v2.RandomHorizontalFlip())
        if self.rotate_deg or self.shift or self.scale:
            steps.append(
                v2.RandomAffine(
                    degrees=self.rotate_deg,
                    translate=(self.shift, self.shift),
                    scale=(1.0 - self.scale, 1.0 + self.scale),
                )
            )
        if self.brightness or self.contrast:
            steps.append(v2.ColorJitter(brightness=self.brightness, contrast=self.contrast))
        if self.gray_p:
            # Grayscale evaluation sets and IR-ish cab cameras: teach colour invariance.
            steps.append(v2.RandomGrayscale(p=self.gray_p))
        return v2.Compose(steps)


class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """uint8 HWC RGB images with integer labels -> (float CHW 0..255 tensor, label)."""

    def __init__(self, images: Chips, labels: list[int], augment: Augment | None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = augment.transform() if augment is not None else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1)))
        if self.transform is not None:
            x = self.transform(x)
        return x.float(), self.labels[index]


# ---------------------------------------------------------------------------------------
# Identity folders


@dataclass
class IdentityChips:
    """Aligned chips of one split, labelled `<set>/<identity>`."""

    chips: Chips
    labels: list[str]
    sets: list[str]
    skipped: Counter[str] = field(default_factory=Counter)

    def label_codes(self) -> tuple[list[int], list[str]]:
        """Integer class per chip and the class names in code order."""
        names = sorted(set(self.labels))
        index = {name: i for i, name in enumerate(names)}
        return [index[label] for label in self.labels], names

    def subset(self, set_name: str) -> IdentityChips:
        """The chips of one source set (metrics are reported per set, never pooled)."""
        keep = [i for i, s in enumerate(self.sets) if s == set_name]
        return IdentityChips(
            self.chips[keep], [self.labels[i] for i in keep], [set_name] * len(keep)
        )


@dataclass(frozen=True)
class IdentitySplit:
    """Which identities train and which are held out for verification, per set."""

    train: dict[str, list[str]]
    val: dict[str, list[str]]


def split_identities(
    identities: dict[str, list[str]], val_fraction: float, seed: int
) -> IdentitySplit:
    """Hold out a seeded fraction of each set's identities (at least 2 when any are held out)."""
    rng = random.Random(seed)
    train: dict[str, list[str]] = {}
    val: dict[str, list[str]] = {}
    for set_name, names in sorted(identities.items()):
        order = sorted(names)
        rng.shuffle(order)
        n_val = 0 if val_fraction <= 0 else max(2, round(val_fraction * len(order)))
        if n_val and len(order) - n_val < 1:
            raise ValueError(
                f"set {set_name}: {len(order)} identities cannot give {n_val} held-out "
                "identities and keep one to train on (lower --val-fraction)"
            )
        val[set_name] = sorted(order[:n_val])
        train[set_name] = sorted(order[n_val:])
    return IdentitySplit(train, val)


def _resize_chip(rgb: np.ndarray, size: int) -> np.ndarray:
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA), np.uint8)


class ChipMaker:
    """Turns a photo into the recognizer's aligned chip: with the base pack's own alignment."""

    def __init__(self, engine: FaceEngine | None, chip_size: int) -> None:
        # No engine when the images are already chips.
        self.engine = engine
        self.chip_size = chip_size

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray | None, str]:
        """(RGB chip, how it was made), or (None, why not)."""
        if self.engine is None:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            return _resize_chip(np.asarray(rgb, np.uint8), self.chip_size), "aligned"
        acquired = self.engine.acquire(bgr, whole_crop=True)
        if acquired is None:
            return None, "no_face"
        return self.engine.align(acquired.image, acquired.face), acquired.method


def load_identity_chips(
    data: Path, split: dict[str, list[str]] | None, maker: ChipMaker, progress: bool = True
) -> IdentityChips:
    """Chips of every image of the chosen identities (`split`: set -> identities; None = all)."""
    chips: list[np.ndarray] = []
    labels: list[str] = []
    sets: list[str] = []
    skipped: Counter[str] = Counter()
    for face_set in find_sets(data):
        wanted = None if split is None else set(split.get(face_set.name, []))
        items = [
            (path, label)
            for path, label in zip(face_set.images, face_set.labels, strict=True)
            if wanted is None or label in wanted
        ]
        for path, label in tqdm(
            items, desc=f"chips {face_set.name}", unit="img", disable=not progress, leave=False
        ):
            try:
                bgr = read_image(str(path))
            except ModelError as err:
                logger.warning("skipping %s", err)
                skipped["unreadable"] += 1
                continue
            chip, how = maker(bgr)
            if chip is None:
                logger.info("skipping %s: %s", path, how)
                skipped[how] += 1
                continue
            chips.append(chip)
            labels.append(f"{face_set.name}/{label}")
            sets.append(face_set.name)
    size = maker.chip_size
    stacked = np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
    return IdentityChips(stacked, labels, sets, skipped)


def identities_of(data: Path) -> dict[str, list[str]]:
    """set name -> identity folder names, for every labelled set under `data`."""
    return {s.name: sorted(set(s.labels)) for s in find_sets(data)}


# ---------------------------------------------------------------------------------------
# Live / spoof folders


@dataclass
class LivenessImages:
    """Face crops resized to the model's input, label 1 = live, 0 = spoof."""

    crops: Chips
    labels: list[int]
    paths: list[Path]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _liveness_sets(root: Path) -> list[Path]:
    """`root` holds live/ and spoof*/ itself, or is a folder of such sets."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    if (root / LIVE_FOLDER).is_dir():
        return [root]
    sets = [d for d in sorted(root.iterdir()) if (d / LIVE_FOLDER).is_dir()]
    if not sets:
        raise ValueError(f"{root}: no '{LIVE_FOLDER}/' folder (and no sets holding one)")
    return sets


def load_liveness_images(root: Path, size: int) -> LivenessImages:
    """Every image under live/ (label 1) and spoof*/ (label 0), resized to size x size RGB."""
    crops: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    for set_dir in _liveness_sets(root):
        spoof_dirs = [
            d for d in sorted(set_dir.iterdir()) if d.is_dir() and d.name.startswith(SPOOF_PREFIX)
        ]
        if not spoof_dirs:
            raise ValueError(f"{set_dir}: no '{SPOOF_PREFIX}*/' folder beside '{LIVE_FOLDER}/'")
        for folder, label in [(set_dir / LIVE_FOLDER, 1)] + [(d, 0) for d in spoof_dirs]:
            for path in _images(folder):
                try:
                    bgr = read_image(str(path))
                except ModelError as err:
                    logger.warning("skipping %s", err)
                    continue
                rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
                crops.append(_resize_chip(rgb, size))
                labels.append(label)
                paths.append(path)
    counts = Counter(labels)
    if counts[1] == 0 or counts[0] == 0:
        raise ValueError(
            f"{root}: need both live and spoof images, found {counts[1]} live, {counts[0]} spoof"
        )
    return LivenessImages(np.stack(crops), labels, paths)


def stratified_split(
    labels: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train indices, val indices), holding out `val_fraction` of each class."""
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == cls]
        rng.shuffle(idx)
        n_val = round(val_fraction * len(idx))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(1, n_val), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)
