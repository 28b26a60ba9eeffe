"""jifang-open against the dlib reference pipeline, on the same frames in the same run.

Speed: ms per 640x480 frame with one face (detect + align + embed), jifang-open on
onnxruntime with 2 threads, dlib-bin (HOG detector, 5-point shape, 150 px chip, ResNet v1
descriptor) as the peer. Accuracy: FNMR at FMR 1e-2 and 1e-3 (where the impostor pairs
support it) on every face set in ../shared/data/faces that has genuine pairs, each set on its
own. Nothing is fitted here, so every image counts as test data.

Writes bench/results/face_pipeline.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _common import SHARED_FACES, default_pack, write_result
from tqdm import tqdm

from calibration.datasets import FaceSet, find_sets
from calibration.metrics import fmr_key, pair_scores, score_report
from models.engine import FaceEngine
from models.runtime.image import read_image
from models.vectors import l2_normalize

FMRS = (1e-2, 1e-3)
FRAME = (640, 480)


class DlibReference:
    """dlib's own pipeline: HOG detector, 5-point shape predictor, chip, ResNet descriptor."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models

        root = Path(face_recognition_models.__file__).parent / "models"
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(root / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(root / "dlib_face_recognition_resnet_model_v1.dat")
        )

    def _largest(self, rgb: np.ndarray, upsample: int):  # noqa: ANN202
        rects = self.detector(rgb, upsample)
        return max(rects, key=lambda r: r.area()) if len(rects) else None

    def descriptor(self, bgr: np.ndarray, upsample: int = 0) -> np.ndarray | None:
        """Descriptor of the largest face: detected, else detected after padding, else crop."""
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        rect = self._largest(rgb, upsample)
        if rect is None:
            pad = max(rgb.shape[:2]) // 2
            rgb = np.ascontiguousarray(
                cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            )
            rect = self._largest(rgb, upsample)
        if rect is None:
            rect = self.dlib.rectangle(pad, pad, rgb.shape[1] - pad - 1, rgb.shape[0] - pad - 1)
        chip = self.dlib.get_face_chip(rgb, self.shape(rgb, rect), size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip), np.float64)


def frames(limit: int) -> list[np.ndarray]:
    """640x480 frames with one face: shared colour photos when present, else skimage's."""
    sources: list[np.ndarray] = []
    for name in ("casia_ea_dev", "lfw_7people", "deepface_celebs_dev"):
        folder = SHARED_FACES / name
        if folder.is_dir():
            sources += [
                read_image(str(p))
                for p in sorted(folder.glob("*/*"))[: limit // 3]
                if p.suffix.lower() in {".jpg", ".png", ".bmp"}
            ]
    if not sources:
        import skimage.data

        sources = [np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])]
    out = []
    for image in sources:
        h, w = image.shape[:2]
        scale = min(FRAME[0] / w, FRAME[1] / h) * 0.6  # the face fills part of the frame
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((FRAME[1], FRAME[0], 3), 96, np.uint8)
        y, x = (FRAME[1] - small.shape[0]) // 2, (FRAME[0] - small.shape[1]) // 2
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        out.append(canvas)
    return out


def time_per_frame(run: Callable[[np.ndarray], object], images: list[np.ndarray]) -> float:
    """Median ms per frame over the frames (after one warm-up pass)."""
    for image in images[:3]:
        run(image)
    times = []
    for image in images:
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ours_embedding(engine: FaceEngine, image: np.ndarray) -> np.ndarray | None:
    acquired = engine.acquire(image)
    return None if acquired is None else engine.embed(acquired.image, acquired.face)


def fnmr_for(
    face_set: FaceSet, embed: Callable[[np.ndarray], np.ndarray | None], normalise: bool, label: str
) -> dict[str, float]:
    vectors, labels = [], []
    for path, identity in tqdm(
        list(zip(face_set.images, face_set.labels, strict=True)),
        desc=f"{label} {face_set.name}",
        leave=False,
    ):
        vector = embed(read_image(str(path)))
        if vector is not None:
            vectors.append(vector)
            labels.append(identity)
    matrix = np.stack(vectors).astype(np.float64)
    if normalise:
        matrix = l2_normalize(matrix)
        genuine, impostor = pair_scores(matrix.astype(np.float32), labels)
    else:
        # dlib's native score: smaller Euclidean distance is closer; negate to rank like a
        # similarity.
        dists = np.linalg.norm(matrix[:, None, :] - matrix[None, :, :], axis=2)
        codes = np.unique(np.asarray(labels), return_inverse=True)[1]
        upper = np.triu_indices(len(labels), k=1)
        same = codes[upper[0]] == codes[upper[1]]
        genuine, impostor = -dists[upper][same], -dists[upper][~same]
    report = score_report(genuine, impostor, FMRS)
    return {f"{face_set.name}@{k}": v for k, v in report.fnmr_at_fmr.items()}


def main() -> None:
    """Run both pipelines on the same frames and sets; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=60, help="timing frames")
    parser.add_argument("--no-accuracy", action="store_true", help="timing only")
    args = parser.parse_args()

    engine = FaceEngine(default_pack(), threads=2)
    reference = DlibReference()
    images = frames(args.frames)
    ours_ms = time_per_frame(lambda im: ours_embedding(engine, im), images)
    dlib_ms = time_per_frame(reference.descriptor, images)

    ours_fnmr: dict[str, float] = {}
    dlib_fnmr: dict[str, float] = {}
    if not args.no_accuracy and SHARED_FACES.is_dir():
        for face_set in find_sets(SHARED_FACES):
            if len(set(face_set.labels)) == len(face_set.labels):
                continue  # singletons: no genuine pairs, no FNMR
            ours_fnmr |= fnmr_for(face_set, lambda im: ours_embedding(engine, im), True, "ours")
            dlib_fnmr |= fnmr_for(face_set, lambda im: reference.descriptor(im, 1), False, "dlib")
    write_result(
        "face_pipeline",
        {
            "ours_ms_per_frame": round(ours_ms, 2),
            "dlib_ms_per_frame": round(dlib_ms, 2),
            "speedup": round(dlib_ms / ours_ms, 2),
            "ours_fnmr": ours_fnmr,
            "dlib_fnmr": dlib_fnmr,
            "frames": len(images),
            "threads": 2,
            "split": "no fitting: every image of every set is test data",
            "fmr_keys": [fmr_key(f) for f in FMRS],
        },
    )


if __name__ == "__main__":
    main()
