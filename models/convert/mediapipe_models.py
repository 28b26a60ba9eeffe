"""Build the ONNX files of the open default pack from the Apache-2.0 mediapipe 0.10.21 wheel."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from models.convert.tflite_to_onnx import convert_tflite
from models.convert.wheel_source import read_wheel_member

logger = logging.getLogger(__name__)

# 0.10.21 is the last mediapipe release whose wheel bundles the solution models.
MEDIAPIPE_DIST = "mediapipe"
MEDIAPIPE_VERSION = "0.10.21"


@dataclass(frozen=True)
class MediapipeModel:
    """One tflite file in the mediapipe wheel and the names its ONNX twin exposes."""

    member: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


# Output order is the tflite subgraph's output order (checked: boxes first, then scores).
MEDIAPIPE_MODELS: dict[str, MediapipeModel] = {
    "blazeface_short": MediapipeModel(
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        ("image",),
        ("regressors", "classificators"),
    ),
    "blazeface_full": MediapipeModel(
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        ("image",),
        ("regressors", "classificators"),
    ),
    "face_mesh": MediapipeModel(
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        ("image",),
        ("landmarks", "face_flag"),
    ),
    # The station's person check: the detector finds candidates, the landmark model confirms
    # each one with its pose-presence flag (mediapipe's own two-stage pose pipeline).
    "pose_detection": MediapipeModel(
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        ("image",),
        ("regressors", "classificators"),
    ),
    "pose_landmark_full": MediapipeModel(
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        ("image",),
        ("landmarks", "pose_flag", "segmentation", "heatmap", "world_landmarks"),
    ),
}


def read_mediapipe_tflite(key: str, cache_dir: Path | None = None) -> bytes:
    """Return the tflite bytes of MEDIAPIPE_MODELS[key] from the mediapipe wheel."""
    return read_wheel_member(
        MEDIAPIPE_DIST, MEDIAPIPE_VERSION, MEDIAPIPE_MODELS[key].member, cache_dir
    )


def build_mediapipe_onnx(key: str, cache_dir: Path | None = None) -> onnx.ModelProto:
    """Convert MEDIAPIPE_MODELS[key] to an ONNX model."""
    spec = MEDIAPIPE_MODELS[key]
    data = read_mediapipe_tflite(key, cache_dir)
    return convert_tflite(data, spec.input_names, spec.output_names, graph_name=key)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of the builder."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", choices=sorted(MEDIAPIPE_MODELS))
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--wheel-cache", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Write <out-dir>/<key>.onnx for each requested model."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for key in args.models:
        path = args.out_dir / f"{key}.onnx"
        onnx.save(build_mediapipe_onnx(key, args.wheel_cache), path)
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
