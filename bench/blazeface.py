"""BlazeFace figures: ms per 640x480 frame and face-found rate on the shared face sets."""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
from _common import REPO, SHARED_FACES, write_result

from models.convert.mediapipe_models import build_mediapipe_onnx
from models.runtime.blazeface import (
    MEDIAPIPE_NMS_IOU,
    MEDIAPIPE_SCORE_THRESHOLD,
    BlazeFaceDetector,
    Variant,
    box_iou,
    detect_multiscale,
)
from models.types import Detection

COLOUR_SETS = ("lfw_7people", "deepface_celebs_dev", "casia_ea_dev")
GRAY_SETS = ("lfw_east_asian28_gray", "orl_att_faces", "yale_faces")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".gif"}


def ensure_model(variant: Variant, models_dir: Path, wheel_cache: Path | None) -> Path:
    """Build var/models/blazeface_<variant>.onnx from the mediapipe wheel if it is missing."""
    path = models_dir / f"blazeface_{variant}.onnx"
    if not path.exists():
        models_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(build_mediapipe_onnx(f"blazeface_{variant}", wheel_cache), path)
    return path


def frame_640x480() -> np.ndarray:
    """A real photo (skimage astronaut) letterboxed onto a 640x480 BGR frame."""
    from skimage.data import astronaut

    face = cv2.cvtColor(cv2.resize(astronaut(), (480, 480)), cv2.COLOR_RGB2BGR)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 80:560] = face
    return frame


def time_detect(detector: BlazeFaceDetector, frame: np.ndarray, runs: int) -> float:
    """Median ms of detector.detect(frame)."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.detect(frame)
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def load_set(root: Path) -> list[np.ndarray]:
    """All images of a face set as BGR (gray expanded to 3 channels by the reader)."""
    images = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"unreadable image {path}")
        images.append(image)
    return images


def found_rate(
    images: list[np.ndarray], detect: Callable[[np.ndarray], list[Detection]]
) -> dict[str, float]:
    """Fraction of images with >=1 face, and with more than one."""
    counts = [len(detect(image)) for image in images]
    return {
        "found": sum(c > 0 for c in counts) / len(counts),
        "multi": sum(c > 1 for c in counts) / len(counts),
        "ms": 0.0,
    }


def dlib_agreement(root: Path, detect: Callable[[np.ndarray], list[Detection]]) -> dict[str, float]:
    """cjk_singletons: fraction of images with a face, and with one overlapping dlib's box."""
    rows = list(csv.DictReader((root / "FACES.tsv").open(encoding="utf-8"), delimiter="\t"))
    found = agreed = 0
    for row in rows:
        path = root / row["id"] / f"{row['id']}_0001.jpg"
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"unreadable image {path}")
        x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
        faces = detect(image)
        found += bool(faces)
        if faces:
            boxes = np.array([f.box for f in faces], np.float32)
            # dlib's HOG box is tighter than BlazeFace's (brows to lip), hence IoU >= 0.3.
            agreed += float(box_iou(np.array([x, y, x + w, y + h], np.float32), boxes).max()) >= 0.3
    return {"found": found / len(rows), "agrees_with_dlib": agreed / len(rows)}


def main() -> None:
    """Print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED_FACES)
    parser.add_argument("--models-dir", type=Path, default=REPO / ".cache" / "bench-models")
    parser.add_argument("--wheel-cache", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    results: dict[str, object] = {}
    frame = frame_640x480()
    variants: tuple[Variant, ...] = ("short", "full")
    detectors = {}
    for variant in variants:
        path = ensure_model(variant, args.models_dir, args.wheel_cache)
        for threads in (2, 1):
            detector = BlazeFaceDetector(
                path, variant, MEDIAPIPE_SCORE_THRESHOLD[variant], MEDIAPIPE_NMS_IOU, threads
            )
            ms = time_detect(detector, frame, args.runs)
            results[f"ms_640x480_{variant}_{threads}t"] = ms
            print(f"{variant:5s} {threads} thread(s): {ms:.2f} ms per 640x480 frame (median)")
        detectors[variant] = detector  # the 1-thread one: fair to the 2 shared cores
    for name in COLOUR_SETS + GRAY_SETS:
        images = load_set(args.data / name)
        for variant, detector in detectors.items():
            for mode, detect in (
                ("detect", detector.detect),
                ("multiscale", lambda image, d=detector: detect_multiscale(d, image)),
            ):
                start = time.perf_counter()
                rate = found_rate(images, detect)
                rate["ms"] = (time.perf_counter() - start) * 1000.0 / len(images)
                results[f"{name}/{variant}/{mode}"] = rate
                print(
                    f"{name:22s} n={len(images):3d} {variant:5s} {mode:10s} "
                    f"found {rate['found']:.3f}  >1 face {rate['multi']:.3f}  "
                    f"{rate['ms']:.1f} ms/img"
                )
    cjk = args.data / "cjk_singletons"
    if (cjk / "FACES.tsv").exists():
        for variant, detector in detectors.items():
            for mode, detect in (
                ("detect", detector.detect),
                ("multiscale", lambda image, d=detector: detect_multiscale(d, image)),
            ):
                agreement = dlib_agreement(cjk, detect)
                results[f"cjk_singletons/{variant}/{mode}"] = agreement
                print(
                    f"{'cjk_singletons':22s} n=1514 {variant:5s} {mode:10s} "
                    f"found {agreement['found']:.3f}  IoU>=0.3 with dlib "
                    f"{agreement['agrees_with_dlib']:.3f}"
                )
    write_result("blazeface", results)


if __name__ == "__main__":
    main()
