"""Station vision bench: frames/s per camera (2 cameras together, 8 zones, 1280x720) and QR decode rate.

Usage: PYTHONPATH=. python bench/station.py [--seconds 10] [--frames 8] [--qr-rounds 3] [--qr-reads 5]
Writes bench/results/station.json: fps_per_camera (presence by the cylinder detector, which
runs on every frame at the default detector_every_n_frames = 1), cameras, zones, detector
(the component's wrapper), fps_per_camera_background (the background method, the peer in
the same run), qr_decode_rate per code size and blur (best of the frames a cylinder stands
for) and qr_decode_rate_no_deblur (the same without the deblurring tries). The fps figures
are zone analysis only (presence, person by occupancy, QR every n-th frame) on pre-rendered
frames: they leave out capture and video decoding. The detector is a timing pack of the
trainer's default network (see timing_pack).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from _common import REPO, RESULTS

from edge_agent.station.config import VisionConfig
from edge_agent.station.person import load_person_detector
from edge_agent.station.sim.labelled import render_set
from edge_agent.station.sim.render import CellState, Renderer, qr_modules
from edge_agent.station.sim.scenario import SimLayout, make_layout, station_config
from edge_agent.station.vision import ZoneAnalyzer
from models.station_pack import load_station_manifest

WIDTH, HEIGHT = 1280, 720
ZONES = 8
CAMERAS = 2
MODULE_PX = (1.4, 2, 2.5, 3, 4)  # 41, 58, 72, 87 and 116 px codes (29 modules)
BLUR_SIGMA = (0.0, 0.5, 1.0, 1.5, 2.0)


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


def timing_pack(root: Path) -> Path:
    """A station pack of the trainer's default network and input size, for timing only.

    It is trained for one epoch (3 steps) on rendered frames: its boxes mean nothing, but a
    forward pass costs what a trained detector's does (`jifang train station-detector` defaults).
    """
    from training import station_detector

    data = render_set(root / "frames", {"cam_a": 12})
    out = root / "timing-pack"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", "--val-fraction", "0",
            "--batch-size", "4", "--no-progress"]  # fmt: skip
    station_detector.main(station_detector.parse(argv))
    return out


def bench_fps(
    seconds: float,
    frame_count: int,
    person_model: Path | None = None,
    station_pack: Path | None = None,
) -> float:
    """Run one analyser thread per camera for `seconds`; return the slower camera's frames/s."""
    layout = make_layout(CAMERAS, ZONES, WIDTH, HEIGHT)
    vision = VisionConfig(
        person_method="pose" if person_model else "occupancy",
        person_model=person_model,
        station_pack=station_pack,
    )
    config = station_config(layout, vision=vision)
    renderer = Renderer(layout, seed=1, module_px=3)
    counts: dict[str, int] = {}
    stop = threading.Event()

    def worker(camera_id: str, frames: list[np.ndarray], background: np.ndarray) -> None:
        detector = load_person_detector(config.vision)
        analyzer = ZoneAnalyzer(camera_id, config.zones, config.vision, (WIDTH, HEIGHT), detector)
        analyzer.set_background(background)
        if station_pack is not None and not analyzer.uses_detector:
            raise SystemExit(f"{station_pack}: the station vision did not load its detector")
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


def bench_qr(rounds: int, reads: int, deblur: bool = True) -> dict[str, float]:
    """Decode rate of the simulator's labels through the analyser, per code size and blur.

    Each round puts a new labelled cylinder on every zone, and it stays for `reads` frames,
    as a cylinder stands on the scale for a fill (at 10 frames/s a fill lasts hundreds of
    frames, so a few reads is a low bound). A cylinder counts as read when its own code, and
    no other, is decoded in one of those frames (best of N). The first-frame rate is printed
    beside it.
    """
    layout = make_layout(1, ZONES, WIDTH, HEIGHT)
    vision = VisionConfig(qr_every_n_frames=1)
    if not deblur:
        vision = vision.model_copy(update={"qr_deblur_sigmas": ()})
    config = station_config(layout, vision=vision)
    rates: dict[str, float] = {}
    for module_px in MODULE_PX:
        renderer = Renderer(layout, seed=2, module_px=module_px)
        side = round(qr_modules("SD-LPG-000000").shape[0] * module_px)
        for sigma in BLUR_SIGMA:
            rng = np.random.default_rng(int(module_px * 10) * 10 + int(sigma * 10))
            analyzer = ZoneAnalyzer("cam1", config.zones, config.vision, (WIDTH, HEIGHT))
            analyzer.set_background(renderer.render("cam1", {}, sigma))
            read = first = total = 0
            for _ in range(rounds):
                cells = {
                    c.scale_id: CellState(
                        label_code=f"SD-LPG-{rng.integers(0, 999999):06d}", person=True
                    )
                    for c in layout.cells
                }
                seen: dict[str, list[tuple[str, ...]]] = {c: [] for c in cells}
                for _ in range(reads):
                    frame = renderer.render("cam1", cells, sigma)
                    for obs in analyzer.process(frame, 0.0):
                        seen[obs.scale_id].append(obs.codes)
                for scale_id, found in seen.items():
                    expected = (cells[scale_id].label_code,)
                    codes = {c for f in found for c in f}
                    total += 1
                    read += int(codes == set(expected))
                    first += int(bool(found) and found[0] == expected)
            key = f"{side}px_blur{sigma:g}"
            rates[key] = round(read / max(total, 1), 4)
            print(f"QR {key}: {read}/{total} within {reads} frames, {first}/{total} on the first")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the fps run")
    parser.add_argument("--frames", type=int, default=8, help="pre-rendered frames per camera")
    parser.add_argument(
        "--qr-rounds", type=int, default=3, help="rounds of 8 new cylinders per QR condition"
    )
    parser.add_argument(
        "--qr-reads", type=int, default=5, help="frames each cylinder stays for (best of N)"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        # The target machine has 2 cores: measure on 2.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cv2.setNumThreads(1)
    print(f"cores: {len(os.sched_getaffinity(0))}, cv2 threads: {cv2.getNumThreads()}")
    print("presence by background difference:")
    fps_background = bench_fps(args.seconds, args.frames)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        pack = timing_pack(Path(tmp))
        every = VisionConfig().detector_every_n_frames
        print(f"presence by the cylinder detector (every {every} frame(s), 1 thread per camera):")
        fps = bench_fps(args.seconds, args.frames, station_pack=pack)
        detector = load_station_manifest(pack).files[0].wrapper
    pose_model = REPO / ".cache" / "model_packs" / "station" / "pose_detection.onnx"
    if pose_model.exists():
        # Not in the result file (its keys are fixed): the cost of the optional pose person check.
        print("with the pose person check:")
        bench_fps(args.seconds, args.frames, pose_model)
    rates = bench_qr(args.qr_rounds, args.qr_reads)
    print("without deblurring (the crop as it is):")
    plain = bench_qr(args.qr_rounds, args.qr_reads, deblur=False)
    # Exactly the keys the outside checks read; the machine goes to stdout only.
    record = {
        "fps_per_camera": round(fps, 2),
        "cameras": CAMERAS,
        "zones": ZONES,
        "detector": detector,
        "fps_per_camera_background": round(fps_background, 2),
        "qr_decode_rate": rates,
        "qr_decode_rate_no_deblur": plain,
    }
    text = json.dumps(record, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "station.json").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'station.json'} ({platform.machine()}, {os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
