"""The pose person check on real plant frames (false alarms) and on people composited into them.

Used by bench/station_real.py (`--person-only` runs only this part). Operator areas are the
bench's zones (edge_agent.station.detector_eval.strips: 4 vertical strips per frame, each its own
operator area), run through the station's own ZoneAnalyzer with person_method pose and the
VisionConfig defaults, person_every_n_frames 1. A still is shown person_window_checks times (a
static camera): persistence then neither helps nor hurts, so the figures are the single-frame
check's.

Positives: a people photo pasted into a plant frame at one operator area (cycling through the 39
frames and the 4 areas), scaled so the person is as tall as a filler standing in that area:
stature = U(STATURE_RANGE) x area height, face box = FACE_TO_STATURE x stature, feet at the
area's bottom, face centre U(-X_JITTER, X_JITTER) x area width off the area's centre line. The
face box that sets the scale comes from dlib (cjk_singletons' FACES.tsv) or BlazeFace full range
(deepface_celebs_dev), never from the pose model under test. Two pastes: `segmented` (GrabCut
person mask, feathered: the person over the plant) and `rectangle` (the scaled photo as a block,
its own background included). Nothing is fitted on these frames; only counts are written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from _common import REPO

from edge_agent.station.config import VisionConfig, ZoneConfig
from edge_agent.station.detector_eval import strips
from edge_agent.station.person import (
    PersonDetection,
    PoseDetector,
    PoseLandmarker,
    PosePersonCheck,
    build_pose_detection_onnx,
    build_pose_landmark_onnx,
    implausibility,
)
from edge_agent.station.sim.render import CellState, Renderer
from edge_agent.station.sim.scenario import make_layout, station_config
from edge_agent.station.vision import ZoneAnalyzer

SHARED = REPO.parent / "shared" / "data"
SCENES = SHARED / "scenes" / "gas_cylinder_conveyor"
PORTRAITS = SHARED / "faces" / "deepface_celebs_dev"
CJK = SHARED / "faces" / "cjk_singletons"
MODEL_DIR = REPO / ".cache" / "model_packs" / "station"
ZONES = 4

# Anthropometry, not fitted: an adult's head is about 1/7.5 of the stature and a detector's face
# box (eyebrows to chin) about 3/4 of the head, so 0.10 of the stature.
FACE_TO_STATURE = 0.10
# A filler standing in an area drawn around a standing filler, with some margin above the head.
STATURE_RANGE = (0.7, 1.0)
X_JITTER = 0.15
# cjk_singletons photos that hold most of a body: the image is at least this many face heights
# tall and the face is in its upper third (a long shot, not a portrait).
FULL_BODY_FACE_HEIGHTS = 7
GRABCUT_SIDE = 480
GRABCUT_ITERATIONS = 4
SEED = 19

Paste = Literal["segmented", "rectangle"]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PersonPhoto:
    """A people photo and the face box (x0, y0, x1, y1) that sets its scale."""

    path: Path
    face: Box
    source: str


def person_vision() -> VisionConfig:
    """The defaults, with the pose check on every frame (the stills are shown in turn)."""
    return VisionConfig(
        person_method="pose",
        person_model=build_pose_detection_onnx(MODEL_DIR),
        person_landmark_model=build_pose_landmark_onnx(MODEL_DIR),
        person_every_n_frames=1,
        qr_every_n_frames=100,
    )


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise SystemExit(f"{path}: unreadable image")
    return image


def plant_frames() -> list[Path]:
    """The 39 plant frames, in name order."""
    return sorted(SCENES.glob("*/*.jpg"))


@dataclass(frozen=True)
class Models:
    """The two pose stages and the check that chains them."""

    detector: PoseDetector
    landmarker: PoseLandmarker
    check: PosePersonCheck


def load_models(vision: VisionConfig) -> Models:
    """The pose models the vision config names."""
    if vision.person_model is None or vision.person_landmark_model is None:
        raise SystemExit("the pose person check needs both models")
    detector = PoseDetector(
        vision.person_model, vision.person_score_threshold, vision.person_nms_iou
    )
    landmarker = PoseLandmarker(vision.person_landmark_model)
    return Models(detector, landmarker, PosePersonCheck(detector, landmarker, vision))


def _occupied(
    image: np.ndarray, zones: list[ZoneConfig], vision: VisionConfig, check: PosePersonCheck
) -> dict[str, bool]:
    """Person per operator area after the station's checks on a still shown repeatedly."""
    h, w = image.shape[:2]
    analyzer = ZoneAnalyzer("real", zones, vision, (w, h), check)
    observations = []
    for _ in range(vision.person_window_checks):
        observations = analyzer.process(image, 0.0)
    return {o.zone_id: o.person_present for o in observations}


def _inside(zone: ZoneConfig, point: tuple[float, float]) -> bool:
    polygon = np.array(zone.operator_polygon, np.float32)
    return cv2.pointPolygonTest(polygon, point, False) >= 0


def false_alarm_stages(frames: list[Path], vision: VisionConfig, models: Models) -> dict[str, int]:
    """Frames with a person left at any operator area after each stage of the check."""
    stages = dict.fromkeys(("detector", "upright", "pose_presence", "size"), 0)
    for path in frames:
        image = _read(path)
        h, w = image.shape[:2]
        hit = dict.fromkeys(stages, False)
        for zone in strips(w, h, ZONES):
            (x0, y0), (x1, y1) = zone.operator_polygon[0], zone.operator_polygon[2]
            proposals = models.detector.detect(image[y0 : y1 + 1, x0 : x1 + 1])
            moved = [p.shifted(x0, y0) for p in proposals]
            left = [p for p in moved if _inside(zone, _face_centre(p))]
            hit["detector"] |= bool(left)
            left = [p for p in left if implausibility(p, vision) is None]
            hit["upright"] |= bool(left)
            left = [
                p
                for p in left
                if models.landmarker.presence(image, p) >= vision.person_presence_threshold
            ]
            hit["pose_presence"] |= bool(left)
            height = y1 + 1 - y0
            left = [
                p
                for p in left
                if vision.person_min_torso_fraction * height
                <= p.torso_length
                <= vision.person_max_torso_fraction * height
            ]
            hit["size"] |= bool(left)
        for stage, fired in hit.items():
            stages[stage] += int(fired)
    return stages


def _face_centre(person: PersonDetection) -> tuple[float, float]:
    return ((person.box[0] + person.box[2]) / 2, (person.box[1] + person.box[3]) / 2)


def portrait_photos() -> list[PersonPhoto]:
    """deepface_celebs_dev photos with the largest BlazeFace (full range) face as the scale."""
    from models.convert.mediapipe_models import build_mediapipe_onnx
    from models.runtime.blazeface import BlazeFaceDetector

    path = MODEL_DIR / "blazeface_full.onnx"
    if not path.exists():
        import onnx

        onnx.save(build_mediapipe_onnx("blazeface_full"), str(path))
    faces = BlazeFaceDetector(path, "full", 0.5, 0.3, threads=1)
    photos = []
    for photo in sorted(PORTRAITS.glob("*/*.jpg")):
        found = faces.detect(_read(photo))
        if found:
            best = max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
            photos.append(PersonPhoto(photo, best.box, "portraits"))
    return photos


def full_body_photos() -> list[PersonPhoto]:
    """cjk_singletons long shots (one dlib face, FULL_BODY_FACE_HEIGHTS+ tall, face up top)."""
    with (CJK / "MANIFEST.tsv").open(encoding="utf-8") as f:
        heights = {r["id"]: int(r["height"]) for r in csv.DictReader(f, delimiter="\t")}
    photos = []
    with (CJK / "FACES.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            x, y, fw, fh = (int(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
            height = heights[row["id"]]
            if row["n_faces_detected"] != "1" or fh * FULL_BODY_FACE_HEIGHTS > height:
                continue
            if y > height / 3:
                continue
            photos.append(
                PersonPhoto(
                    CJK / row["id"] / f"{row['id']}_0001.jpg", (x, y, x + fw, y + fh), "full_body"
                )
            )
    return photos


def person_mask(photo: np.ndarray, face: Box) -> np.ndarray:
    """A float alpha (0..1) of the person: GrabCut from a body box below the face, feathered."""
    h, w = photo.shape[:2]
    s = min(1.0, GRABCUT_SIDE / max(h, w))
    small = cv2.resize(
        photo, (max(int(w * s), 8), max(int(h * s), 8)), interpolation=cv2.INTER_AREA
    )
    sh, sw = small.shape[:2]
    x0, y0, x1, y1 = (v * s for v in face)
    side = max(x1 - x0, y1 - y0)
    cx = (x0 + x1) / 2
    # Shoulders and arms span about 3 face widths either side; keep 2 px of border as
    # background so GrabCut has something to learn it from.
    left = int(np.clip(cx - 3.0 * side, 2, sw - 4))
    right = int(np.clip(cx + 3.0 * side, left + 2, sw - 2))
    top = int(np.clip(y0 - 0.6 * side, 2, sh - 4))
    bottom = sh - 2
    mask = np.zeros((sh, sw), np.uint8)
    background = np.zeros((1, 65), np.float64)
    foreground = np.zeros((1, 65), np.float64)
    cv2.grabCut(
        small,
        mask,
        (left, top, right - left, bottom - top),
        background,
        foreground,
        GRABCUT_ITERATIONS,
        cv2.GC_INIT_WITH_RECT,
    )
    person = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
    soft = cv2.GaussianBlur(person, (0, 0), max(side * 0.05, 0.5))
    return cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)


def composite(
    frame: np.ndarray,
    photo: np.ndarray,
    alpha: np.ndarray,
    face: Box,
    zone: ZoneConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """The frame with the photo's person standing in the zone's operator area."""
    (ax0, ay0), (ax1, ay1) = zone.operator_polygon[0], zone.operator_polygon[2]
    stature = rng.uniform(*STATURE_RANGE) * (ay1 - ay0)
    face_side = max(face[2] - face[0], face[3] - face[1])
    f = FACE_TO_STATURE * stature / face_side
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(photo, None, fx=f, fy=f, interpolation=interpolation)
    weight = cv2.resize(alpha, (scaled.shape[1], scaled.shape[0]), interpolation=cv2.INTER_LINEAR)
    # Head top at feet - stature; the face box starts about a third of a face below it.
    target_x = (ax0 + ax1) / 2 + rng.uniform(-X_JITTER, X_JITTER) * (ax1 - ax0)
    target_y = ay1 - stature + (0.35 + 0.5) * FACE_TO_STATURE * stature
    dx = int(round(target_x - (face[0] + face[2]) / 2 * f))
    dy = int(round(target_y - (face[1] + face[3]) / 2 * f))
    out = frame.astype(np.float32)
    h, w = frame.shape[:2]
    fx0, fy0 = max(dx, 0), max(dy, 0)
    fx1, fy1 = min(dx + scaled.shape[1], w), min(dy + scaled.shape[0], h)
    if fx1 <= fx0 or fy1 <= fy0:
        return frame.copy()
    part = scaled[fy0 - dy : fy1 - dy, fx0 - dx : fx1 - dx].astype(np.float32)
    a = weight[fy0 - dy : fy1 - dy, fx0 - dx : fx1 - dx, None]
    out[fy0:fy1, fx0:fx1] = a * part + (1 - a) * out[fy0:fy1, fx0:fx1]
    return np.clip(out, 0, 255).astype(np.uint8)


def _positives(
    photos: list[PersonPhoto], frames: list[Path], paste: Paste
) -> Iterator[tuple[np.ndarray, list[ZoneConfig], str]]:
    """(composited frame, its zones, the zone the person stands in) per photo."""
    rng = np.random.default_rng(SEED)
    for index, item in enumerate(photos):
        frame = _read(frames[index % len(frames)])
        h, w = frame.shape[:2]
        zones = strips(w, h, ZONES)
        zone = zones[index % ZONES]
        photo = _read(item.path)
        alpha = (
            person_mask(photo, item.face)
            if paste == "segmented"
            else np.ones(photo.shape[:2], np.float32)
        )
        yield composite(frame, photo, alpha, item.face, zone, rng), zones, zone.id


def recall(
    photos: list[PersonPhoto],
    frames: list[Path],
    paste: Paste,
    vision: VisionConfig,
    check: PosePersonCheck,
    sample_dir: Path | None = None,
) -> dict[str, int]:
    """Positives found at their operator area, and other areas that fired in those frames."""
    found = others = 0
    for n, (image, zones, target) in enumerate(_positives(photos, frames, paste)):
        occupied = _occupied(image, zones, vision, check)
        found += int(occupied[target])
        others += sum(v for k, v in occupied.items() if k != target)
        if sample_dir is not None and n % 10 == 0:
            small = cv2.resize(image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(sample_dir / f"{paste}_{n:03d}_{int(occupied[target])}.png"), small)
    return {"found": found, "positives": len(photos), "other_areas_fired": others}


def simulator_figures(frames: int = 12) -> dict[str, Any]:
    """Occupancy (the default person method) and the pose check on the simulator's figures."""
    layout = make_layout(1, 8, 1280, 720)
    config = station_config(layout, vision=VisionConfig(qr_every_n_frames=100))
    renderer = Renderer(layout, seed=3)
    analyzer = ZoneAnalyzer("cam1", config.zones, config.vision, (1280, 720))
    analyzer.set_background(renderer.render("cam1", {}))
    pose_vision = person_vision()
    pose = ZoneAnalyzer(
        "cam1", config.zones, pose_vision, (1280, 720), load_models(pose_vision).check
    )
    rng = np.random.default_rng(SEED)
    counts = {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "pose_found": 0}
    for i in range(frames):
        people = {c.scale_id: bool(rng.integers(0, 2)) for c in layout.cells}
        cells = {
            c.scale_id: CellState(label_code=f"SD-LPG-{i:03d}{k:03d}", person=people[c.scale_id])
            for k, c in enumerate(layout.cells)
        }
        frame = renderer.render("cam1", cells)
        for obs in analyzer.process(frame, float(i)):
            truth = people[obs.scale_id]
            counts[
                ("t" if truth == obs.person_present else "f") + ("p" if obs.person_present else "n")
            ] += 1
        for obs in pose.process(frame, float(i)):
            counts["pose_found"] += int(people[obs.scale_id] and obs.person_present)
    positives = counts["tp"] + counts["fn"]
    return {
        "occupancy_recall": round(counts["tp"] / max(positives, 1), 4),
        "occupancy_false_alarms": counts["fp"],
        "positives": positives,
        "negatives": counts["fp"] + counts["tn"],
        "pose_found": counts["pose_found"],
    }


def person_station_figures(sample_dir: Path | None = None) -> dict[str, Any]:
    """person_false_alarms, person_recall and their details and protocol."""
    vision = person_vision()
    models = load_models(vision)
    check = models.check
    frames = plant_frames()
    alarms = 0
    for path in frames:
        image = _read(path)
        h, w = image.shape[:2]
        alarms += int(any(_occupied(image, strips(w, h, ZONES), vision, check).values()))
    stages = false_alarm_stages(frames, vision, models)
    print("false alarms", alarms, "by stage", stages)
    sets = {"portraits": portrait_photos(), "full_body": full_body_photos()}
    by_set: dict[str, Any] = {}
    pooled = {"found": 0, "positives": 0}  # counts only
    for name, photos in sets.items():
        for paste in ("segmented", "rectangle"):
            result = recall(photos, frames, paste, vision, check, sample_dir)
            rate = round(result["found"] / max(result["positives"], 1), 4)
            by_set[f"{name}_{paste}"] = {**result, "recall": rate}
            print(name, paste, result)
            if paste == "segmented":
                pooled["found"] += result["found"]
                pooled["positives"] += result["positives"]
    simulator = simulator_figures()
    print("simulator", simulator)
    return {
        "person_false_alarms": alarms,
        "person_false_alarm_frames": len(frames),
        "person_false_alarms_by_stage": stages,
        "person_recall": by_set["full_body_segmented"]["recall"],
        "person_recall_pooled": round(pooled["found"] / max(pooled["positives"], 1), 4),
        "person_recall_by_set": by_set,
        "person_simulator": simulator,
        "person_protocol": protocol(vision),
    }


def protocol(v: VisionConfig) -> str:
    """The protocol of the person figures, with the thresholds they ran under."""
    return (
        "Pose person check through the station's ZoneAnalyzer with the VisionConfig defaults "
        f"(pose_detection score >= {v.person_score_threshold}; hip-to-shoulder tilt <= "
        f"{v.person_max_tilt_deg:g} deg; pose_landmark_full presence >= "
        f"{v.person_presence_threshold} on the body crop from the whole frame; face centre in "
        f"the operator polygon; torso {v.person_min_torso_fraction}-{v.person_max_torso_fraction} "
        f"of the operator area's height; {v.person_confirm_checks} of {v.person_window_checks} "
        "checks), the check run every frame. Operator areas: the bench's "
        f"{ZONES} vertical strips per frame (each strip its own operator area); each still is "
        f"shown {v.person_window_checks} times (a static camera: persistence neither helps nor "
        "hurts). person_false_alarms: frames of the 39 in scenes/gas_cylinder_conveyor with any "
        "area occupied (no person stands at a filling position there; workers are in the "
        "background); person_false_alarms_by_stage: frames with a proposal left at an area after "
        "each stage in turn. Positives: one people photo pasted per positive into a plant frame "
        f"(the 39 in turn) at one area (the {ZONES} in turn), scaled by its face box (dlib for "
        "cjk_singletons, BlazeFace full range for deepface_celebs_dev; never the pose model) to "
        f"a stature of U{STATURE_RANGE} x the area's height with face box = {FACE_TO_STATURE} x "
        f"stature, feet on the area's bottom, face centre within {X_JITTER} area widths of its "
        "middle; found when that area is occupied; other_areas_fired counts the other areas of "
        "those frames that reported a person. Sets: full_body = cjk_singletons with one face, "
        f"image >= {FULL_BODY_FACE_HEIGHTS} face heights tall, face in the upper third (a person "
        "standing at the position); portraits = deepface_celebs_dev, head-and-shoulders to "
        "half-body photos, which end mid-area with no lower body (a stress set, not a plausible "
        "scene); pasted segmented (GrabCut mask from a body box below the face, feathered) or "
        "as a rectangle (the photo's own background around the person). person_recall = "
        "full_body segmented (chosen as the headline after the first run showed the portraits "
        "far lower; person_recall_pooled = both sets segmented, the figure first declared). "
        "person_simulator: the simulator's drawn figures, 12 frames x 8 zones with random "
        "occupancy, default occupancy method (background difference); pose_found = drawn "
        "figures the pose check finds (the pose models need a real body; the simulator is "
        "judged by occupancy). person_pose_detector: the raw detector on whole images (no zones, "
        "no checks), as before. No threshold was set from these frames."
    )
