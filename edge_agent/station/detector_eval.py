"""Labelled station frames (YOLO layout) and how the cylinder detector is scored on them.

Layout: every folder under the data root that holds images (`*.jpg`, `*.jpeg`, `*.png`) is a
view, with one YOLO label file per image in `<view>/labels/<stem>.txt`: one line per box,
`class cx cy w h` normalised to the image, class 0 = cylinder. An empty file is a frame with
no cylinder; an image without a label file is unlabelled and skipped (logged), not counted as
empty. Both shared layouts fit: `gas_cylinder_conveyor/<view>/` and
`gas_cylinder_conveyor_more/train/<view>/`, or a folder holding them.

Scores: box AP at IoU 0.5 (all-point interpolated, detections of every image pooled), and
zone presence: each frame is cut into vertical strips along the conveyor (`strips`); a strip
holds a cylinder when the labelled boxes cover `GT_COVER` of it, and the station's own
`ZoneAnalyzer` with the detector decides the same strip from the detected boxes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.station.config import VisionConfig, ZoneConfig

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABELS_DIR = "labels"
CYLINDER_CLASS = 0
GT_COVER = 0.3
"""A zone holds a cylinder when the labelled boxes cover this much of it (bench/station_real.py)."""
ZONES_PER_VIEW = 4
TOP = 0.08
"""The strips start below the frame's top edge (wall, tripods)."""
AP_IOU = 0.5

Box = tuple[float, float, float, float]


class LabelError(ValueError):
    """The labelled data is not in the YOLO layout; the message names the file (and line)."""


@dataclass(frozen=True)
class LabelledImage:
    """One labelled frame: its path, its folder (view) and its boxes, normalised cx cy w h."""

    path: Path
    folder: str
    boxes: np.ndarray = field(repr=False)
    """[K,4] float32 cx, cy, w, h in 0..1."""

    def pixel_boxes(self, width: int, height: int) -> np.ndarray:
        """[K,4] x0, y0, x1, y1 in pixels of a width x height image."""
        b = self.boxes.astype(np.float64)
        out = np.stack(
            [
                (b[:, 0] - b[:, 2] / 2) * width,
                (b[:, 1] - b[:, 3] / 2) * height,
                (b[:, 0] + b[:, 2] / 2) * width,
                (b[:, 1] + b[:, 3] / 2) * height,
            ],
            axis=1,
        )
        return out.reshape(-1, 4).astype(np.float32)


@dataclass(frozen=True)
class LabelledSet:
    """Every labelled frame under a root, in time order within each folder."""

    root: Path
    images: tuple[LabelledImage, ...]
    unlabelled: tuple[Path, ...] = ()


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value (frame_150 before frame_1050)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def read_labels(path: Path) -> np.ndarray:
    """The cylinder boxes of one YOLO label file; LabelError names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot read ({err})") from err
    rows: list[list[float]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise LabelError(
                f"{path}:{number}: expected 5 fields 'class cx cy w h', got {len(parts)}"
            )
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError as err:
            raise LabelError(f"{path}:{number}: not numbers ({line.strip()!r})") from err
        if cls != CYLINDER_CLASS:
            raise LabelError(
                f"{path}:{number}: class {cls}, only {CYLINDER_CLASS} (cylinder) is known"
            )
        if not all(np.isfinite(v) for v in (cx, cy, w, h)) or not (
            0.0 <= cx <= 1.0 and 0.0 <= cy <= 1.0 and 0.0 < w <= 1.0 and 0.0 < h <= 1.0
        ):
            raise LabelError(
                f"{path}:{number}: box {cx} {cy} {w} {h} is not normalised "
                "(centre in 0..1, size in (0, 1])"
            )
        rows.append([cx, cy, w, h])
    return np.asarray(rows, np.float32).reshape(-1, 4)


def _image_folders(root: Path) -> list[Path]:
    folders = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if folder.name == LABELS_DIR:
            continue
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file()):
            folders.append(folder)
    return folders


def load_labelled_set(root: Path) -> LabelledSet:
    """Every labelled frame under `root`; LabelError for a missing labels folder or a bad line."""
    if not root.is_dir():
        raise LabelError(f"{root}: not a folder")
    folders = _image_folders(root)
    if not folders:
        raise LabelError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or below it")
    images: list[LabelledImage] = []
    unlabelled: list[Path] = []
    for folder in folders:
        labels = folder / LABELS_DIR
        if not labels.is_dir():
            raise LabelError(f"{folder}: has images but no {LABELS_DIR}/ folder of YOLO labels")
        paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: natural_key(p.name),
        )
        name = str(folder.relative_to(root)) if folder != root else folder.name
        for path in paths:
            label = labels / f"{path.stem}.txt"
            if not label.is_file():
                unlabelled.append(path)
                continue
            images.append(LabelledImage(path, name, read_labels(label)))
    for path in unlabelled:
        logger.warning("%s: no label file, skipped", path)
    if not images:
        raise LabelError(f"{root}: no image has a label file")
    return LabelledSet(root, tuple(images), tuple(unlabelled))


def read_frame(path: Path) -> np.ndarray:
    """A BGR frame; LabelError names an unreadable file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise LabelError(f"{path}: not a readable image")
    return image


def average_precision(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray],
    iou: float = AP_IOU,
) -> float:
    """All-point interpolated AP over images: detections (boxes [K,4], scores [K]) per image."""
    from models.runtime.cylinder_detector import iou_matrix

    total = sum(len(t) for t in truths)
    if total == 0:
        return float("nan")
    rows: list[tuple[float, int, int]] = []  # score, image, detection
    for i, (_, scores) in enumerate(detections):
        rows.extend((float(s), i, k) for k, s in enumerate(scores))
    rows.sort(key=lambda r: -r[0])
    used = [np.zeros(len(t), bool) for t in truths]
    tp = np.zeros(len(rows))
    for n, (_, i, k) in enumerate(rows):
        truth = truths[i]
        if len(truth) == 0:
            continue
        overlaps = iou_matrix(detections[i][0][k : k + 1], truth)[0]
        overlaps[used[i]] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou:
            used[i][best] = True
            tp[n] = 1.0
    if not rows:
        return 0.0
    hits = np.cumsum(tp)
    recall = hits / total
    precision = hits / np.arange(1, len(rows) + 1)
    # Precision envelope, then the area under the recall steps (VOC 2010+ / COCO style).
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * envelope))


def strips(
    width: int, height: int, count: int = ZONES_PER_VIEW, camera_id: str = "real"
) -> list[ZoneConfig]:
    """Vertical strips across the frame below TOP, each a zone (the bench's zones)."""
    zones = []
    y0 = int(height * TOP)
    for i in range(count):
        x0, x1 = width * i // count, width * (i + 1) // count - 1
        poly = [(x0, y0), (x1, y0), (x1, height - 1), (x0, height - 1)]
        zones.append(
            ZoneConfig(
                id=f"z{i}",
                camera_id=camera_id,
                scale_id=f"s{i}",
                polygon=poly,
                operator_polygon=poly,
            )
        )
    return zones


def coverage(zone: ZoneConfig, boxes: Sequence[Box] | np.ndarray, shape: tuple[int, int]) -> float:
    """Fraction of a strip zone covered by the union of the boxes (full-frame pixels)."""
    mask = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)
    (zx0, zy0), (zx1, zy1) = zone.polygon[0], zone.polygon[2]
    return float(mask[zy0 : zy1 + 1, zx0 : zx1 + 1].mean())


@dataclass
class PresenceCounts:
    """Zone-presence confusion counts."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, truth: bool, predicted: bool) -> None:
        if truth and predicted:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / n if n else float("nan")

    def as_dict(self) -> dict[str, float]:
        """Counts and accuracy, for result files."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "accuracy": round(self.accuracy, 4),
        }


def evaluate_detector(
    detector: Any,
    images: Sequence[LabelledImage],
    vision: VisionConfig | None = None,
    zones_per_view: int = ZONES_PER_VIEW,
    min_score: float = 0.05,
    group: Callable[[LabelledImage], str] | None = None,
) -> dict[str, Any]:
    """Box AP@0.5 and zone-presence accuracy of a cylinder detector on labelled frames.

    Presence runs the station's ZoneAnalyzer with this detector on the strip zones, so it is
    the figure the station would get; AP uses every detection down to `min_score`.
    `group` names a key per image (e.g. the view) for per-group presence counts.
    """
    from edge_agent.station.vision import ZoneAnalyzer

    vision = vision or VisionConfig(qr_every_n_frames=100)
    dets: list[tuple[np.ndarray, np.ndarray]] = []
    truths: list[np.ndarray] = []
    counts = PresenceCounts()
    per_group: dict[str, PresenceCounts] = {}
    for item in images:
        frame = read_frame(item.path)
        h, w = frame.shape[:2]
        truth = item.pixel_boxes(w, h)
        found = detector.detect(frame, min_score)
        dets.append(
            (
                np.asarray([d.box for d in found], np.float32).reshape(-1, 4),
                np.asarray([d.score for d in found], np.float32),
            )
        )
        truths.append(truth)
        zones = strips(w, h, zones_per_view)
        analyzer = ZoneAnalyzer("real", zones, vision, (w, h), cylinder_detector=detector)
        key = group(item) if group else None
        for zone, obs in zip(zones, analyzer.process(frame, 0.0), strict=True):
            expected = coverage(zone, truth, (h, w)) >= GT_COVER
            counts.add(expected, obs.cylinder_present)
            if key is not None:
                per_group.setdefault(key, PresenceCounts()).add(expected, obs.cylinder_present)
    ap = average_precision(dets, truths)
    result: dict[str, Any] = {
        "box_ap50": round(ap, 4) if np.isfinite(ap) else None,
        "presence_accuracy": round(counts.accuracy, 4)
        if counts.accuracy == counts.accuracy
        else None,
        "images": len(images),
        "boxes": int(sum(len(t) for t in truths)),
        "zones_per_image": zones_per_view,
        "presence": counts.as_dict(),
    }
    if group is not None:
        result["presence_by_group"] = {k: v.as_dict() for k, v in sorted(per_group.items())}
    return result


def evaluate_station_pack(
    pack_dir: Path, data: Path, threads: int = 1, zones_per_view: int = ZONES_PER_VIEW
) -> dict[str, Any]:
    """`jifang eval station-detector`: the pack's detector scored on a labelled folder."""
    from models.errors import ModelError
    from models.station_pack import load_cylinder_detector

    detector = load_cylinder_detector(pack_dir, threads)
    if detector is None:
        raise ModelError(f"{pack_dir}: the station pack has no cylinder detector")
    labelled = load_labelled_set(data)
    result = evaluate_detector(
        detector, labelled.images, zones_per_view=zones_per_view, group=lambda i: i.folder
    )
    result["unlabelled_skipped"] = len(labelled.unlabelled)
    return result
