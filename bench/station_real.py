"""Cylinder presence per zone on the real LPG-plant frames (internal shared data; skipped when absent).

Each view (front, back_left, back_right: 9 synchronized time stamps) is cut into vertical zone
strips along the conveyor. Ground truth: a zone holds a cylinder when the YOLO boxes cover at
least GT_COVER of it. The analyser's background is the median of the view's *other* frames
(leave-one-out), standing in for the background a deployed camera learns over time.
Only counts are written (bench/results/station_real.json); no image leaves the shared folder.

Usage: PYTHONPATH=. python bench/station_real.py [--zones 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from _common import REPO, write_result

from edge_agent.station.config import VisionConfig, ZoneConfig
from edge_agent.station.vision import ZoneAnalyzer

SCENES = REPO.parent / "shared" / "data" / "scenes" / "gas_cylinder_conveyor"
VIEWS = ("front", "back_left", "back_right")
GT_COVER = 0.3
TOP = 0.08  # the strips start below the frame's top edge (wall, tripods)


def load_view(view: str) -> list[tuple[Path, np.ndarray, list[tuple[float, float, float, float]]]]:
    """(path, image, boxes in pixels x0 y0 x1 y1) for every labelled frame of a view."""
    items = []
    for path in sorted((SCENES / view).glob("*.jpg")):
        label = path.parent / "labels" / (path.stem + ".txt")
        if not label.exists():
            continue
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: unreadable image")
        h, w = image.shape[:2]
        boxes = []
        for row, line in enumerate(label.read_text().splitlines()):
            parts = line.split()
            if len(parts) != 5:
                raise SystemExit(f"{label}:{row + 1}: expected 5 fields")
            _, cx, cy, bw, bh = map(float, parts)
            boxes.append(
                ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            )
        items.append((path, image, boxes))
    return items


def strips(width: int, height: int, count: int) -> list[ZoneConfig]:
    """Vertical strips across the frame, each a zone."""
    zones = []
    y0 = int(height * TOP)
    for i in range(count):
        x0, x1 = width * i // count, width * (i + 1) // count - 1
        poly = [(x0, y0), (x1, y0), (x1, height - 1), (x0, height - 1)]
        zones.append(
            ZoneConfig(
                id=f"z{i}", camera_id="real", scale_id=f"s{i}", polygon=poly, operator_polygon=poly
            )
        )
    return zones


def coverage(
    zone: ZoneConfig, boxes: list[tuple[float, float, float, float]], shape: tuple[int, int]
) -> float:
    """Fraction of the zone covered by the union of the boxes."""
    mask = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(mask, (int(x0), int(y0)), (int(x1), int(y1)), 1, -1)
    (zx0, zy0), (zx1, zy1) = zone.polygon[0], zone.polygon[2]
    return float(mask[zy0 : zy1 + 1, zx0 : zx1 + 1].mean())


def evaluate(zone_count: int, vision: VisionConfig) -> dict[str, dict[str, float]]:
    """Confusion counts and rates per view and overall."""
    results: dict[str, dict[str, float]] = {}
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for view in VIEWS:
        items = load_view(view)
        if len(items) < 3:
            continue
        h, w = items[0][1].shape[:2]
        zones = strips(w, h, zone_count)
        counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        for index, (_, image, boxes) in enumerate(items):
            others = [img for j, (_, img, _) in enumerate(items) if j != index]
            background = np.median(np.stack(others), axis=0).astype(np.uint8)
            analyzer = ZoneAnalyzer("real", zones, vision, (w, h))
            analyzer.set_background(background)
            for zone, obs in zip(zones, analyzer.process(image, 0.0), strict=True):
                truth = coverage(zone, boxes, (h, w)) >= GT_COVER
                key = ("t" if truth == obs.cylinder_present else "f") + (
                    "p" if obs.cylinder_present else "n"
                )
                counts[key] += 1
        for k in total:
            total[k] += counts[k]
        results[view] = _rates(counts)
    results["all"] = _rates(total)
    return results


def _rates(c: dict[str, int]) -> dict[str, float]:
    n = sum(c.values())
    return {
        **{k: float(v) for k, v in c.items()},
        "accuracy": round((c["tp"] + c["tn"]) / max(n, 1), 4),
        "recall": round(c["tp"] / max(c["tp"] + c["fn"], 1), 4),
        "precision": round(c["tp"] / max(c["tp"] + c["fp"], 1), 4),
    }


def person_figures(thresholds: tuple[float, ...] = (0.5, 0.6, 0.7)) -> dict[str, object]:
    """Pose detector: share of people photos with a detection, and plant frames with any detection.

    The plant frames have no person labels: a detection there is counted, and was checked by eye
    (see the report); the people photos are in-the-wild portraits (faces/deepface_celebs_dev).
    """
    from edge_agent.station.person import PoseDetector, build_pose_detection_onnx

    model = build_pose_detection_onnx(REPO / ".cache" / "model_packs" / "station")
    detector = PoseDetector(model, min(thresholds), 0.3)
    people = sorted((REPO.parent / "shared" / "data" / "faces" / "deepface_celebs_dev").glob("*/*"))
    plant = sorted(SCENES.glob("*/*.jpg"))

    def best(path: Path) -> float:
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: unreadable image")
        return max((p.score for p in detector.detect(image)), default=0.0)

    people_scores = [best(p) for p in people]
    plant_scores = [best(p) for p in plant]
    return {
        str(t): {
            "people_photos_detected": f"{sum(s >= t for s in people_scores)}/{len(people_scores)}",
            "plant_frames_with_detection": f"{sum(s >= t for s in plant_scores)}/{len(plant_scores)}",
        }
        for t in thresholds
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zones", type=int, default=4, help="zone strips per view")
    args = parser.parse_args()
    if not SCENES.is_dir():
        print(f"{SCENES} absent: nothing to measure")
        return
    results = evaluate(args.zones, VisionConfig(qr_every_n_frames=100))
    for view, r in results.items():
        print(view, r)
    person = person_figures()
    print("pose detector", person)
    write_result(
        "station_real",
        {
            "zones_per_view": args.zones,
            "gt_cover": GT_COVER,
            "presence": results,
            "person_pose_detector": person,
        },
    )


if __name__ == "__main__":
    main()
