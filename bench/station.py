"""Station vision bench: frames/s per camera (2 cameras together, 8 zones, 1280x720) and QR decode rate.

Usage: PYTHONPATH=. python bench/station.py [--seconds 10] [--frames 8]
Writes bench/results/station.json with exactly the keys fps_per_camera, cameras, zones and
qr_decode_rate (read by checks outside the test suite). The fps figure is zone analysis only
(presence, person by occupancy, QR every n-th frame) on pre-rendered frames: it leaves out
capture and video decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from _common import REPO, RESULTS

from edge_agent.station.config import VisionConfig
from edge_agent.station.person import LANDMARK_ONNX, load_person_detector
from edge_agent.station.sim.render import CellState, Renderer, qr_modules
from edge_agent.station.sim.scenario import SimLayout, make_layout, station_config
from edge_agent.station.vision import ZoneAnalyzer

WIDTH, HEIGHT = 1280, 720
ZONES = 8
CAMERAS = 2
MODULE_PX = (2, 3, 4)
BLUR_SIGMA = (0.0, 1.5)


def _busy_frames(
    renderer: Renderer, layout: SimLayout, camera_id: str, count: int, seed: int
) -> list[np.ndarray]:
    """Frames with every zone occupied and people coming and going (the worst case: QR every n frames)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        cells = {
            c.scale_id: CellState(
                label_code=f"SD-LPG-{rng.integers(0, 999999):06d}", person=bool((i + k) % 3)
            )
            for k, c in enumerate(layout.cells)
            if c.camera_id == camera_id
        }
        frames.append(renderer.render(camera_id, cells))
    return frames


def bench_fps(seconds: float, frame_count: int, person_model: Path | None = None) -> float:
    """Run one analyser thread per camera for `seconds`; return the slower camera's frames/s."""
    layout = make_layout(CAMERAS, ZONES, WIDTH, HEIGHT)
    vision = (
        VisionConfig(
            person_method="pose",
            person_model=person_model,
            person_landmark_model=person_model.parent / LANDMARK_ONNX,
        )
        if person_model
        else VisionConfig()
    )
    config = station_config(layout, vision=vision)
    renderer = Renderer(layout, seed=1, module_px=3)
    counts: dict[str, int] = {}
    stop = threading.Event()

    def worker(camera_id: str, frames: list[np.ndarray], background: np.ndarray) -> None:
        detector = load_person_detector(config.vision)
        analyzer = ZoneAnalyzer(camera_id, config.zones, config.vision, (WIDTH, HEIGHT), detector)
        analyzer.set_background(background)
        n = 0
        while not stop.is_set():
            analyzer.process(frames[n % len(frames)], float(n))
            n += 1
        counts[camera_id] = n

    threads = []
    for index, camera_id in enumerate(layout.camera_ids):
        frames = _busy_frames(renderer, layout, camera_id, frame_count, seed=index)
        background = renderer.render(camera_id, {})
        threads.append(
            threading.Thread(
                target=worker, args=(camera_id, frames, background), name=f"bench-{camera_id}"
            )
        )
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    per_camera = {cam: n / elapsed for cam, n in counts.items()}
    print(f"frames/s per camera: { {k: round(v, 1) for k, v in per_camera.items()} }")
    return min(per_camera.values())


def bench_qr(frames_per_condition: int) -> dict[str, float]:
    """Decode rate of the simulator's labels through the analyser, per code size and blur."""
    layout = make_layout(1, ZONES, WIDTH, HEIGHT)
    config = station_config(layout, vision=VisionConfig(qr_every_n_frames=1))
    rates: dict[str, float] = {}
    for module_px in MODULE_PX:
        renderer = Renderer(layout, seed=2, module_px=module_px)
        for sigma in BLUR_SIGMA:
            rng = np.random.default_rng(module_px * 10 + int(sigma * 10))
            analyzer = ZoneAnalyzer("cam1", config.zones, config.vision, (WIDTH, HEIGHT))
            background = renderer.render("cam1", {}, sigma)
            analyzer.set_background(background)
            hits = total = 0
            side = 0
            for _ in range(frames_per_condition):
                cells = {
                    c.scale_id: CellState(
                        label_code=f"SD-LPG-{rng.integers(0, 999999):06d}", person=True
                    )
                    for c in layout.cells
                }
                side = qr_modules(next(iter(cells.values())).label_code or "").shape[0] * module_px
                frame = renderer.render("cam1", cells, sigma)
                for obs in analyzer.process(frame, 0.0):
                    total += 1
                    expected = cells[obs.scale_id].label_code
                    hits += int(obs.codes == (expected,))
            key = f"{side}px_blur{sigma:g}"
            rates[key] = round(hits / max(total, 1), 4)
            print(f"QR {key}: {hits}/{total}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the fps run")
    parser.add_argument("--frames", type=int, default=8, help="pre-rendered frames per camera")
    parser.add_argument(
        "--qr-frames", type=int, default=10, help="frames per QR condition (8 codes each)"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        # The target machine has 2 cores: measure on 2.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cv2.setNumThreads(1)
    print(f"cores: {len(os.sched_getaffinity(0))}, cv2 threads: {cv2.getNumThreads()}")
    fps = bench_fps(args.seconds, args.frames)
    pose_model = REPO / ".cache" / "model_packs" / "station" / "pose_detection.onnx"
    if pose_model.exists() and (pose_model.parent / LANDMARK_ONNX).exists():
        # Not in the result file (its keys are fixed): the cost of the optional pose person check.
        print("with the pose person check:")
        bench_fps(args.seconds, args.frames, pose_model)
    rates = bench_qr(args.qr_frames)
    # Exactly the keys the outside checks read; the machine goes to stdout only.
    record = {
        "fps_per_camera": round(fps, 2),
        "cameras": CAMERAS,
        "zones": ZONES,
        "qr_decode_rate": rates,
    }
    text = json.dumps(record, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "station.json").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'station.json'} ({platform.machine()}, {os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
