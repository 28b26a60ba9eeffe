"""Cylinder presence per zone on the real LPG-plant frames (internal shared data; skipped when absent).

Zones: each frame is cut into vertical strips along the conveyor (edge_agent.station.detector_eval
.strips). Ground truth: a zone holds a cylinder when the YOLO boxes cover at least GT_COVER of it.

Two methods:
- background (the fallback): the analyser's background is the median of the view's *other*
  synchronised frames (leave-one-out), standing in for the background a camera learns;
- detector: the cylinder detector trained by training.station_detector, measured only on frames
  it never saw. Protocol: leave one view out (train on the other views' frames of both shared
  folders, test on every labelled frame of the held-out view) for `presence.<view>` and
  `mean_presence_accuracy`; and a time split (per view, the last TIME_TEST of the frames in
  time order are tested, the GAP frames before them dropped, frames of unknown time left out)
  for `box_ap50`.

Only counts are written (bench/results/station_real.json); no image and no trained model
leaves the temporary folder.

The person check (bench/_station_person.py): false alarms of the pose person check on the
plant frames, and its recall on people photos composited into them at an operator area.

Usage: PYTHONPATH=. python bench/station_real.py [--zones 4] [--epochs N] [--threads 2]
       PYTHONPATH=. python bench/station_real.py --person-only   (only the person_ keys)
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import REPO, RESULTS, write_result

from edge_agent.station.config import VisionConfig
from edge_agent.station.detector_eval import (
    GT_COVER,
    LabelledImage,
    coverage,
    evaluate_detector,
    load_labelled_set,
    strips,
)
from edge_agent.station.vision import ZoneAnalyzer

SCENES_ROOT = REPO.parent / "shared" / "data" / "scenes"
SCENES = SCENES_ROOT / "gas_cylinder_conveyor"
MORE = SCENES_ROOT / "gas_cylinder_conveyor_more" / "train"
VIEWS = ("front", "back_left", "back_right")
TIME_TEST = 0.25
GAP = 2
"""Frames dropped before each view's test block (neighbours 75 video frames apart look alike)."""


def load_view(view: str) -> list[tuple[Path, np.ndarray, list[tuple[float, float, float, float]]]]:
    """(path, image, boxes in pixels x0 y0 x1 y1) for every labelled frame of a view."""
    items = []
    for item in load_labelled_set(SCENES / view).images:
        image = cv2.imread(str(item.path))
        if image is None:
            raise SystemExit(f"{item.path}: unreadable image")
        h, w = image.shape[:2]
        boxes = [tuple(b) for b in item.pixel_boxes(w, h).tolist()]
        items.append((item.path, image, boxes))
    return items


def evaluate(zone_count: int, vision: VisionConfig) -> dict[str, dict[str, float]]:
    """Background method: confusion counts and rates per view and overall."""
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


def view_of(path: Path) -> str:
    """The camera of a frame, from its name (the anomaly and 3-view folders mix cameras)."""
    name = path.stem
    if name.startswith("vlcsnap"):
        return "other"
    for view in ("back_left", "back_right", "front"):
        if view in name:
            return view
    return path.parent.name


def time_of(path: Path) -> tuple[str, int] | None:
    """(session, frame number) of a conveyor frame, (day, seconds) of a still; None if unknown."""
    name = path.stem
    still = re.match(r"vlcsnap-(\d{4}-\d{2}-\d{2})-(\d{2})h(\d{2})m(\d{2})s", name)
    if still:
        day, hh, mm, ss = still.groups()
        return day, int(hh) * 3600 + int(mm) * 60 + int(ss)
    frame = re.match(
        r"(\d{2}_\d{2})_(?:front|back_left|back_right)_(?:cropped_|id_\d+_)?(\d+)$", name
    )
    if frame:
        return frame.group(1), int(frame.group(2))
    return None  # anomaly crops: their names carry a bottle number, not a time


def all_frames() -> list[LabelledImage]:
    """Every labelled frame of both shared folders."""
    return [*load_labelled_set(SCENES).images, *load_labelled_set(MORE).images]


def time_split(frames: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Per view: the last TIME_TEST of the main session's frames are tested, GAP dropped."""
    train: list[LabelledImage] = []
    test: list[LabelledImage] = []
    by_view: dict[str, list[tuple[tuple[str, int], LabelledImage]]] = {}
    for item in frames:
        t = time_of(item.path)
        if t is not None:
            by_view.setdefault(view_of(item.path), []).append((t, item))
    for items in by_view.values():
        sessions = [t[0] for t, _ in items]
        main = max(set(sessions), key=sessions.count)
        ordered = sorted((x for x in items if x[0][0] == main), key=lambda x: x[0][1])
        cut = len(ordered) - max(1, round(len(ordered) * TIME_TEST))
        test.extend(i for _, i in ordered[cut:])
        train.extend(i for _, i in ordered[: max(cut - GAP, 0)])
        # Other sessions are earlier footage of the same cameras: training only.
        train.extend(i for t, i in items if t[0] != main)
    return train, test


def _stage(items: list[LabelledImage], root: Path) -> Path:
    """Symlink frames and labels into root/<source>_<view>/ (nothing is copied)."""
    for item in items:
        folder = root / f"{item.path.parent.parent.name}_{view_of(item.path)}"
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / item.path.name).symlink_to(item.path)
        label = item.path.parent / "labels" / f"{item.path.stem}.txt"
        (folder / "labels" / label.name).symlink_to(label)
    return root


def train_and_test(
    name: str,
    train: list[LabelledImage],
    test: list[LabelledImage],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """Train a detector on `train` (no held-out part), score it on `test`."""
    from models.station_pack import load_cylinder_detector
    from training import station_detector

    data = _stage(train, work / name / "train")
    argv = [
        "--data",
        str(data),
        "--out",
        str(work / name / "pack"),
        "--val-fraction",
        "0",
        "--threads",
        str(args.threads),
        "--no-progress",
    ]
    if args.epochs:
        argv += ["--epochs", str(args.epochs)]
    started = time.monotonic()
    station_detector.main(station_detector.parse(argv))
    seconds = time.monotonic() - started
    detector = load_cylinder_detector(work / name / "pack")
    result = evaluate_detector(
        detector,
        test,
        zones_per_view=args.zones,
        group=lambda i: f"{i.path.parent.parent.name}/{i.path.parent.name}",
    )
    result.update(train_images=len(train), train_seconds=round(seconds, 1))
    print(name, {k: v for k, v in result.items() if k != "presence_by_group"})
    return result


def detector_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Leave-one-view-out presence and time-split AP of detectors trained here."""
    frames = all_frames()
    out: dict[str, Any] = {"presence": {}, "folds": {}}
    with tempfile.TemporaryDirectory(prefix="station-real-") as tmp:
        work = Path(tmp)
        for view in VIEWS:
            train = [i for i in frames if view_of(i.path) != view]
            test = [i for i in frames if view_of(i.path) == view]
            fold = train_and_test(f"without_{view}", train, test, args, work)
            out["folds"][f"leave_out_{view}"] = fold
            out["presence"][view] = {**fold["presence"], "frames": fold["images"]}
        train, test = time_split(frames)
        fold = train_and_test("time_split", train, test, args, work)
        out["folds"]["time_split"] = fold
    accuracies = [out["presence"][v]["accuracy"] for v in VIEWS]
    out["mean_presence_accuracy"] = round(float(np.mean(accuracies)), 4)
    out["box_ap50"] = fold["box_ap50"]
    out["time_split_presence_accuracy"] = fold["presence_accuracy"]
    return out


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


def all_person_figures(sample_dir: Path | None) -> dict[str, Any]:
    """Every person_ key: the raw detector on whole images, then the station's check."""
    from _station_person import person_station_figures

    person = person_figures()
    print("pose detector", person)
    return {"person_pose_detector": person, **person_station_figures(sample_dir)}


def write_person_only(sample_dir: Path | None) -> None:
    """Redo the person_ keys; every other key of the last results stays as it was."""
    previous = RESULTS / "station_real.json"
    if not previous.is_file():
        raise SystemExit(f"{previous} absent: run the whole bench first")
    figures = json.loads(previous.read_text())
    figures = {k: v for k, v in figures.items() if not k.startswith("person_")}
    figures.update(all_person_figures(sample_dir))
    write_result("station_real", figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zones", type=int, default=4, help="zone strips per view")
    parser.add_argument(
        "--epochs", type=int, default=20, help="training epochs per fold (0: the trainer's default)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--skip-person", action="store_true", help="leave the pose figures out")
    parser.add_argument(
        "--person-only",
        action="store_true",
        help="measure only the person figures and merge them into the last results",
    )
    parser.add_argument(
        "--person-samples", type=Path, default=None, help="folder for a few composited frames"
    )
    args = parser.parse_args()
    if not SCENES.is_dir() or not MORE.is_dir():
        print(f"{SCENES} or {MORE} absent: nothing to measure")
        return
    if args.person_only:
        write_person_only(args.person_samples)
        return
    background = evaluate(args.zones, VisionConfig(qr_every_n_frames=100))
    for view, r in background.items():
        print("background", view, r)
    detector = detector_figures(args)
    figures: dict[str, Any] = {
        "zones_per_view": args.zones,
        "gt_cover": GT_COVER,
        "train_epochs": args.epochs or "trainer default",
        "presence": detector["presence"],
        "mean_presence_accuracy": detector["mean_presence_accuracy"],
        "box_ap50": detector["box_ap50"],
        "time_split_presence_accuracy": detector["time_split_presence_accuracy"],
        "protocol": {
            "presence": "cylinder detector; leave one view out: trained on every labelled frame "
            "of the other views (gas_cylinder_conveyor + gas_cylinder_conveyor_more/train, "
            "anomaly crops and the 'other' stills included), tested on every labelled frame of "
            f"the held-out view; {args.zones} strips per frame, a strip holds a cylinder when "
            f"boxes cover {GT_COVER} of it; mean_presence_accuracy = mean of the 3 folds",
            "box_ap50": f"time split per view: the last {TIME_TEST:.0%} of the main session's "
            f"frames in frame order are tested, the {GAP} frames before them dropped, anomaly "
            "crops (no time in the name) left out; AP at IoU 0.5, all-point interpolation",
            "background": "presence_background: median of the view's other synchronised frames",
        },
        "folds": detector["folds"],
        "presence_background": background,
    }
    if not args.skip_person:
        figures.update(all_person_figures(args.person_samples))
    previous = RESULTS / "station_real.json"
    if previous.is_file():
        # The person figures (person_false_alarms, person_recall, ...) come from their own
        # measurement; a run that does not redo them keeps the last ones.
        for key, value in json.loads(previous.read_text()).items():
            if key.startswith("person_") and key not in figures:
                figures[key] = value
    write_result("station_real", figures)


if __name__ == "__main__":
    main()
