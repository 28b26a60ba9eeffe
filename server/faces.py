"""The face engine behind enrollment and the embedding contract galleries carry (injectable)."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contract.messages import EmbeddingContract
from server.settings import ServerSettings

if TYPE_CHECKING:
    from models.engine import FaceEngine

logger = logging.getLogger(__name__)


class EnrollmentError(Exception):
    """A photo gave no usable face; the message says why."""


@dataclass(frozen=True)
class Enrolled:
    """A template computed from one photo."""

    embedding: list[float]
    quality: float
    source_sha256: str


class FaceService:
    """Loads the configured pack's FaceEngine on first use, or wraps an injected one."""

    def __init__(self, settings: ServerSettings, engine: FaceEngine | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._lock = threading.Lock()

    def _pack_dir(self) -> Path:
        from models.store import DEFAULT_PACK, default_model_dir, resolve_pack

        model_dir = self._settings.model_dir or default_model_dir()
        if self._settings.face_pack == DEFAULT_PACK and not (model_dir / DEFAULT_PACK).is_dir():
            from models.build_default import build_default_pack

            return build_default_pack(model_dir)
        return resolve_pack(self._settings.face_pack, model_dir)

    @property
    def engine(self) -> FaceEngine:
        """The engine (built on first use, once)."""
        with self._lock:
            if self._engine is None:
                from models.engine import FaceEngine

                self._engine = FaceEngine(self._pack_dir())
            return self._engine

    @property
    def contract(self) -> EmbeddingContract:
        """The embedding contract of the server's templates."""
        manifest = self.engine.manifest
        return EmbeddingContract(
            pack_name=manifest.name,
            pack_version=manifest.version,
            contract_id=manifest.contract_id,
            dim=manifest.embedding.dim,
        )

    def enroll(self, photo: bytes) -> Enrolled:
        """Decode an ID photo, find the face, gate on quality and embed it."""
        import cv2

        settings = self._settings
        image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise EnrollmentError("not a readable image")
        engine = self.engine
        # No whole-crop fallback: a template from something that is not a face would let anyone in.
        acquired = engine.acquire(image, whole_crop=False)
        if acquired is None:
            raise EnrollmentError("no face found")
        scores = engine.quality(acquired.image, acquired.face)
        problems = []
        if scores.face_px < settings.enroll_min_face_px:
            problems.append(f"face {scores.face_px:.0f} px < {settings.enroll_min_face_px} px")
        if scores.sharpness < settings.enroll_min_sharpness:
            problems.append(f"sharpness {scores.sharpness:.2f} < {settings.enroll_min_sharpness}")
        if abs(scores.yaw_deg) > settings.enroll_max_yaw_deg:
            problems.append(f"yaw {scores.yaw_deg:.0f}° > {settings.enroll_max_yaw_deg}°")
        if abs(scores.pitch_deg) > settings.enroll_max_pitch_deg:
            problems.append(f"pitch {scores.pitch_deg:.0f}° > {settings.enroll_max_pitch_deg}°")
        if scores.exposure < settings.enroll_min_exposure:
            problems.append(f"exposure {scores.exposure:.2f} < {settings.enroll_min_exposure}")
        if problems:
            raise EnrollmentError("face unusable: " + ", ".join(problems))
        embedding = engine.embed(acquired.image, acquired.face)
        # One number for the gallery: the weakest of the normalised quality scores.
        pose = 1.0 - max(abs(scores.yaw_deg), abs(scores.pitch_deg)) / 90.0
        quality = float(min(scores.sharpness, scores.exposure, max(0.0, pose)))
        return Enrolled(
            embedding=[float(x) for x in embedding],
            quality=round(min(1.0, max(0.0, quality)), 4),
            source_sha256=hashlib.sha256(photo).hexdigest(),
        )
