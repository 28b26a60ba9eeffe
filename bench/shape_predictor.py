"""Time the numpy 5-point predictor and dlib-style chip against dlib itself (prints figures)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import write_result

from models.convert.dlib_shape_predictor import load_dat
from models.runtime.align import dlib_chip
from models.runtime.shape_predictor import ShapePredictor, dlib_gray


def _ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    import cv2
    import dlib
    import face_recognition_models
    import skimage.data

    models_dir = Path(face_recognition_models.__file__).parent / "models"
    dat = models_dir / "shape_predictor_5_face_landmarks.dat"
    start = time.perf_counter()
    model = load_dat(dat)
    figures: dict[str, float] = {"parse_dat_s": round(time.perf_counter() - start, 2)}
    ours = ShapePredictor(model)
    theirs = dlib.shape_predictor(str(dat))
    rgb = skimage.data.astronaut()
    rect = max(dlib.get_frontal_face_detector()(rgb, 1), key=lambda r: r.area())
    box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
    gray = dlib_gray(rgb)
    shape = theirs(rgb, rect)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    figures["predict_ms_numpy_gray"] = _ms(lambda: ours.predict(gray, box), args.repeat)
    figures["predict_ms_numpy_rgb"] = _ms(lambda: ours.predict(rgb, box), args.repeat)
    figures["predict_ms_dlib"] = _ms(lambda: theirs(rgb, rect), args.repeat)
    figures["dlib_gray_ms_512"] = _ms(lambda: dlib_gray(rgb), args.repeat)
    for zoom in (1.0, 2.5, 4.0):
        img = rgb if zoom == 1 else cv2.resize(rgb, None, fx=zoom, fy=zoom)
        pts = points * zoom
        det = dlib.full_object_detection(
            dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1),
            [dlib.point(int(round(x)), int(round(y))) for x, y in pts],
        )
        n = args.repeat // 2
        mine = _ms(lambda img=img, pts=pts: dlib_chip(img, pts), n)
        ref = _ms(lambda img=img, det=det: dlib.get_face_chip(img, det, 150, 0.25), n)
        figures[f"chip_ms_numpy_face{120 * zoom:.0f}px"] = mine
        figures[f"chip_ms_dlib_face{120 * zoom:.0f}px"] = ref
    write_result("shape_predictor", figures)


if __name__ == "__main__":
    main()
