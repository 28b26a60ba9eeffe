"""Rendered frames with YOLO cylinder labels (grey rounded shapes on noise), for detector tests
and the station bench: `root/<view>/<image>.jpg` with `root/<view>/labels/<image>.txt`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def render_frame(
    rng: np.random.Generator, width: int = 384, height: int = 216, count: int | None = None
) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """A BGR frame and its cylinder boxes, YOLO-normalised (cx, cy, w, h)."""
    noise = rng.integers(20, 120, (height, width, 3), dtype=np.uint8)
    frame: np.ndarray = cv2.GaussianBlur(noise, (0, 0), 2.0)
    count = int(rng.integers(0, 3)) if count is None else count
    boxes: list[tuple[float, float, float, float]] = []
    slots = rng.permutation(3)[:count]
    for slot in slots:
        bw = int(rng.integers(width // 8, width // 5))
        bh = int(rng.integers(height // 2, int(height * 0.8)))
        x0 = int(slot * width // 3 + rng.integers(0, width // 3 - bw))
        y0 = int(rng.integers(0, height - bh))
        grey = int(rng.integers(170, 230))
        r = bw // 3
        cv2.rectangle(frame, (x0, y0 + r), (x0 + bw, y0 + bh - r), (grey,) * 3, -1)
        cv2.rectangle(frame, (x0 + r, y0), (x0 + bw - r, y0 + bh), (grey,) * 3, -1)
        for cx, cy in (
            (x0 + r, y0 + r),
            (x0 + bw - r, y0 + r),
            (x0 + r, y0 + bh - r),
            (x0 + bw - r, y0 + bh - r),
        ):
            cv2.circle(frame, (cx, cy), r, (grey,) * 3, -1)
        boxes.append(((x0 + bw / 2) / width, (y0 + bh / 2) / height, bw / width, bh / height))
    return frame, boxes


def render_set(root: Path, views: dict[str, int], seed: int = 0) -> Path:
    """`root/<view>/<n>.jpg` with `root/<view>/labels/<n>.txt`; returns root."""
    rng = np.random.default_rng(seed)
    for view, n in views.items():
        labels = root / view / "labels"
        labels.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            frame, boxes = render_frame(rng)
            cv2.imwrite(str(root / view / f"{view}_{i * 75}.jpg"), frame)
            (labels / f"{view}_{i * 75}.txt").write_text(
                "".join(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in boxes)
            )
    return root
