"""Embeddings of every shared face set by both pipelines, computed once and cached.

For each image: the dlib reference descriptor (HOG detector with one upsampling, 5-point
shape, 150 px chip, ResNet v1; Euclidean distance is its native score) and jifang's raw
recognizer output (BlazeFace, dlib 5-point landmarks, dlib chip, ResNet v1 on onnxruntime),
taken before any adapter so that adapters can be fitted and applied afterwards. Quality
scores are kept for quality-gated enrollment figures. The cache lives in
<repo>/.cache/population (never committed: it is derived from internal data).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import numpy.typing as npt
from _common import REPO
from face_pipeline import DlibReference
from tqdm import tqdm

from calibration.datasets import FaceSet
from calibration.protocol import SetEmbeddings
from models.engine import FaceEngine
from models.errors import ModelError
from models.runtime.image import read_image

logger = logging.getLogger(__name__)

CACHE = REPO / ".cache" / "population"
MAX_SIDE = 1280
"""Larger photos (cjk_singletons, deepface) are shrunk first for both pipelines alike: dlib's
HOG with upsampling takes seconds on a 7 MP photo, and no face in the sets needs more."""
REFERENCE_UPSAMPLE = 1
"""As bench/face_pipeline.py: one upsampling lets HOG find the 40-80 px faces."""


def _shrink(image: np.ndarray) -> np.ndarray:
    scale = MAX_SIDE / max(image.shape[:2])
    if scale >= 1.0:
        return image
    return np.asarray(
        cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8
    )


def _compute(
    face_set: FaceSet,
    engine: FaceEngine,
    reference: DlibReference,
    known_dlib: npt.NDArray[np.float64] | None = None,
) -> SetEmbeddings:
    n = len(face_set.images)
    # The reference descriptors do not depend on jifang's pack: reuse them when cached.
    dlib_vecs = np.full((n, 128), np.nan) if known_dlib is None else known_dlib
    raw = np.full((n, engine.recognizer.dim), np.nan, np.float32)
    raw_mirror = raw.copy()
    method = np.full(n, "none", dtype=object)
    quality = np.full((n, 3), np.nan, np.float32)
    for i, path in enumerate(tqdm(face_set.images, desc=face_set.name, leave=False)):
        try:
            image = _shrink(read_image(str(path)))
        except ModelError as err:
            logger.warning("%s", err)
            method[i] = "unreadable"
            continue
        if known_dlib is None:
            dlib_vecs[i] = reference.descriptor(image, REFERENCE_UPSAMPLE)
        acquired = engine.acquire(image)
        if acquired is None:
            continue
        method[i] = acquired.method
        chip = engine.align(acquired.image, acquired.face)
        raw[i], raw_mirror[i] = engine.recognizer.embed_chips(np.stack([chip, chip[:, ::-1]]))
        q = engine.quality(acquired.image, acquired.face)
        quality[i] = (q.sharpness, q.face_px, q.yaw_deg)
    return SetEmbeddings(
        face_set.name,
        np.asarray(face_set.labels, dtype=str),
        np.asarray([str(p) for p in face_set.images], dtype=str),
        dlib_vecs,
        raw,
        raw_mirror,
        np.asarray(method, dtype=str),
        quality[:, 0],
        quality[:, 1],
        quality[:, 2],
    )


def load_or_compute(
    face_set: FaceSet, engine: FaceEngine, reference: DlibReference
) -> SetEmbeddings:
    """The cached embeddings of a set (keyed by the pack's contract id), computed when absent."""
    path = CACHE / f"{face_set.name}-{engine.contract_id}.npz"
    known_dlib = None
    if path.is_file():
        data = np.load(path)
        fields = {k: data[k] for k in data.files}
        if list(fields["paths"]) == [str(p) for p in face_set.images]:
            if "raw_mirror" in fields:
                return SetEmbeddings(face_set.name, **fields)
            known_dlib = fields["dlib"]
        logger.info("%s: cache is stale, recomputing", face_set.name)
    result = _compute(face_set, engine, reference, known_dlib)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        labels=result.labels,
        paths=result.paths,
        dlib=result.dlib,
        raw=result.raw,
        raw_mirror=result.raw_mirror,
        method=result.method,
        sharpness=result.sharpness,
        face_px=result.face_px,
        yaw=result.yaw,
    )
    tmp.replace(path)
    return result


def main() -> None:
    """Fill the cache for every shared face set."""
    from _common import SHARED_FACES, default_pack

    from calibration.datasets import find_sets

    logging.basicConfig(level=logging.INFO)
    engine = FaceEngine(default_pack(), threads=1)
    reference = DlibReference()
    for face_set in find_sets(SHARED_FACES):
        got = load_or_compute(face_set, engine, reference)
        logger.info(
            "%s: %d images, %d without a jifang face",
            got.name,
            len(got.labels),
            int(np.sum(np.isnan(got.raw[:, 0]))),
        )


if __name__ == "__main__":
    main()
