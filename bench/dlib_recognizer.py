"""Benchmark: dlib ResNet v1 conversion time and ONNX Runtime latency per face."""

from __future__ import annotations

import argparse
import importlib.resources
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

from models.convert.dlib_resnet import convert_dlib_resnet, parse_dlib_resnet, write_onnx
from models.runtime.dlib_recognizer import DlibResNetRecognizer


def _default_dat() -> Path:
    root = importlib.resources.files("face_recognition_models") / "models"
    return Path(str(root / "dlib_face_recognition_resnet_model_v1.dat"))


def main() -> None:
    """Print conversion time, parameter count and median ms per face for 1 and 2 threads."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dat", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    raw = (args.dat or _default_dat()).read_bytes()

    start = time.perf_counter()
    model = convert_dlib_resnet(raw)
    figures: dict[str, object] = {"conversion_s": round(time.perf_counter() - start, 3)}
    net = parse_dlib_resnet(raw)
    figures["parameters"] = net.parameter_count()
    figures["layers"] = {kind.value: n for kind, n in net.layer_counts().items()}

    chip = np.random.default_rng(0).integers(0, 256, size=(1, 150, 150, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dlib_resnet_v1.onnx"
        write_onnx(model, path)
        for threads in (2, 1):
            recognizer = DlibResNetRecognizer(path, threads=threads)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                recognizer.embed_chips(chip)
                times.append((time.perf_counter() - start) * 1000.0)
            figures[f"ms_per_face_{threads}_threads"] = round(statistics.median(times), 3)
    write_result("dlib_recognizer", figures)


if __name__ == "__main__":
    main()
