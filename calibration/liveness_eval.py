"""`jifang eval liveness`: BPCER and APCER of a pack's passive PAD on a labelled folder.

Layout: `DIR/live`, `DIR/spoof_print`, `DIR/spoof_replay`, each holding images or short
videos. One file is one presentation (ISO/IEC 30107-3 terms): an image is scored once; a
video's frames are scored and the presentation's score is their median over the frames with a
face, so one odd frame does not decide. A presentation in which no face is found is rejected
at every threshold: for a live one that is a bona fide rejection (the gate would refuse the
operator), for an attack it is not accepted.

BPCER = rejected bona fide / bona fide; APCER per attack type = accepted attacks / attacks,
each at `score >= threshold`. A class whose folder is missing or empty has a null rate; a
`spoof*` folder of another name is refused by name rather than left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from models.engine import FaceEngine
from models.errors import ModelError
from models.liveness.onnx_pad import OnnxPad, carried_thresholds, load_pad
from models.manifest import PackManifest
from models.types import Image

logger = logging.getLogger(__name__)

CLASSES: dict[str, str | None] = {"live": None, "spoof_print": "print", "spoof_replay": "replay"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}
VIDEO_SUFFIXES = {".webm", ".mp4", ".avi", ".mov", ".mkv"}
# Frames read from one video presentation, evenly spaced over the clip.
VIDEO_FRAMES = 15


@dataclass(frozen=True)
class Presentation:
    """One scored file."""

    path: Path
    label: str
    score: float
    frames: int
    faces: int

    def accepted(self, threshold: float) -> bool:
        """Taken as live: a face was found and its score reaches the threshold."""
        return self.faces > 0 and self.score >= threshold


def presentations(root: Path) -> dict[str, list[Path]]:
    """Files per class folder; an error naming `root` when it holds none of the classes."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    unknown = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and d.name.startswith("spoof") and d.name not in CLASSES
    )
    if unknown:
        raise ValueError(
            f"{root / unknown[0]}: not a class folder ({', '.join(CLASSES)}); move its files "
            "into the attack type they are (a face shown on a screen is spoof_replay)"
        )
    found = {
        label: sorted(
            p
            for p in (root / label).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        )
        for label in CLASSES
        if (root / label).is_dir()
    }
    if not found:
        raise ValueError(f"{root}: none of the class folders {', '.join(CLASSES)}")
    return found


def read_frames(path: Path, count: int = VIDEO_FRAMES) -> Iterator[Image]:
    """The image itself, or `count` evenly spaced frames of a video."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path))
        if image is None:
            raise ValueError(f"{path}: not a readable image")
        yield np.asarray(image, np.uint8)
        return
    capture = cv2.VideoCapture(str(path))
    try:
        frames: list[Image] = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(np.asarray(frame, np.uint8))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"{path}: no frame could be read")
    for index in np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int):
        yield frames[int(index)]


Scorer = Callable[[Image], float | None]
"""Live probability of the largest face in a frame, or None when no face is found."""


def pack_scorer(engine: FaceEngine, pad: OnnxPad) -> Scorer:
    """Detect with the pack's detector, score the largest face with its PAD."""

    def score(image: Image) -> float | None:
        faces = engine.detect(image)
        if not faces:
            return None
        box = max(faces, key=lambda f: f.detection.box[2] - f.detection.box[0]).detection.box
        return float(pad.score(image, [box])[0])

    return score


def score_presentation(path: Path, label: str, scorer: Scorer) -> Presentation:
    """Median frame score of one file (0 when no frame shows a face)."""
    scores: list[float] = []
    frames = 0
    for frame in read_frames(path):
        frames += 1
        value = scorer(frame)
        if value is not None:
            scores.append(value)
    median = float(np.median(scores)) if scores else 0.0
    return Presentation(path, label, median, frames, len(scores))


def rates(items: list[Presentation], threshold: float) -> dict[str, Any]:
    """The result document at `threshold`."""
    by_label = {label: [p for p in items if p.label == label] for label in CLASSES}
    live = by_label["live"]
    bpcer = sum(not p.accepted(threshold) for p in live) / len(live) if live else None
    apcer: dict[str, float | None] = {}
    for label, attack in CLASSES.items():
        if attack is None:
            continue
        group = by_label[label]
        apcer[attack] = sum(p.accepted(threshold) for p in group) / len(group) if group else None
    return {
        "bpcer": bpcer,
        "apcer": apcer,
        "threshold": threshold,
        "counts": {
            **{label: len(group) for label, group in by_label.items()},
            "no_face": {label: sum(p.faces == 0 for p in g) for label, g in by_label.items()},
        },
    }


@dataclass(frozen=True)
class ScoredFolder:
    """Every presentation of a labelled folder scored with a pack's PAD."""

    items: list[Presentation]
    pad: OnnxPad
    manifest: PackManifest


def score_folder(pack_dir: Path, data: Path, threads: int = 1) -> ScoredFolder:
    """Score every presentation under `data` with the pack's PAD (progress per class)."""
    files = presentations(data)
    engine = FaceEngine(pack_dir, threads=threads)
    pad = load_pad(pack_dir, engine.manifest, threads)
    if pad is None:
        raise ModelError(f"{pack_dir.name}: the pack has no passive PAD model (task liveness)")
    scorer = pack_scorer(engine, pad)
    items = [
        score_presentation(path, label, scorer)
        for label, paths in files.items()
        for path in tqdm(paths, desc=label, unit="file", leave=False)
    ]
    return ScoredFolder(items, pad, engine.manifest)


def evaluate_liveness(
    pack_dir: Path,
    data: Path,
    threshold: float | None = None,
    threads: int = 1,
    calibration: str = "pad",
) -> dict[str, Any]:
    """The result document at `threshold`, else at the live band the pack carries (its PAD
    calibration `calibration` when it has one for this PAD, else the component's own)."""
    scored = score_folder(pack_dir, data, threads)
    chosen = threshold
    if chosen is None:
        chosen = carried_thresholds(pack_dir, scored.manifest, scored.pad, calibration).live
    return rates(scored.items, chosen)
