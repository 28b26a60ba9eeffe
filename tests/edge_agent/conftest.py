"""Fixtures for the cab agent: a signed gallery of real face photos, a config, a gate."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.auth import public_key_b64, sign_envelope
from contract.codes import CertificateStatus, CodeSystem, DeviceKind
from contract.messages import (
    CategoryRule,
    CertificateInfo,
    DeviceConfig,
    EmbeddingContract,
    GalleryOperator,
    GallerySnapshot,
    GalleryTemplate,
    SignedEnvelope,
)
from tests.models.faces import astronaut, cameraman

DEVICE = "FL-0001"
DEVICE_KEY = "test-device-key-0123456789"
TODAY = datetime.now(UTC).date()


def cab_frame(image: np.ndarray) -> np.ndarray:
    """A 640x480 frame with the photo in the middle (as the cab camera would deliver)."""
    face = cv2.resize(image, (480, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_REPLICATE))


def base_config(tmp_path: Path, public_key: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A valid agent config tree (quality gates loosened for the sample photos' pose)."""
    data: dict[str, Any] = {
        "device": {"id": DEVICE, "kind": "forklift", "site_id": "site-1"},
        "server": {"url": "http://127.0.0.1:9", "device_key": DEVICE_KEY, "public_key": public_key},
        "models": {"calibration": "test"},
        "camera": {
            "source": str(tmp_path / "frames"),
            "lost_after_s": 0.5,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.2,
        },
        # The cameraman looks down ~33 degrees; sample photos are ~85 px faces.
        "quality": {"min_face_px": 60, "max_pitch_deg": 40.0},
        "gate": {"frames_required": 3, "window_s": 2.0},
        # The matching tests replay still photos; liveness has its own tests (test_liveness).
        "liveness": {"policy": "none"},
        "store": {"dir": str(tmp_path / "store")},
        "status": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def cert(
    no: str,
    category: str = "N1",
    status: CertificateStatus = CertificateStatus.VALID,
    expires: date | None = None,
) -> CertificateInfo:
    return CertificateInfo(
        certificate_no=no,
        category=category,
        code_system=CodeSystem.TSG2019,
        issue_date=TODAY - timedelta(days=400),
        expiry_date=expires or TODAY + timedelta(days=400),
        status=status,
    )


@dataclass
class Signer:
    """The test's own server key: signs galleries and configs as the server would."""

    key: Ed25519PrivateKey
    contract: EmbeddingContract
    astro_template: np.ndarray
    camera_template: np.ndarray

    @property
    def public_b64(self) -> str:
        return public_key_b64(self.key.public_key())

    def snapshot(
        self,
        operators: list[GalleryOperator] | None = None,
        with_cameraman_template: bool = False,
        generated_at: datetime | None = None,
        extra_astro_templates: int = 0,
        version: int = 1,
        device_id: str = DEVICE,
    ) -> SignedEnvelope:
        if operators is None:
            operators = [astro_operator()]
        templates = [self._template("t-astro", "op-astro", self.astro_template)]
        templates += [
            self._template(f"t-astro-{i}", "op-astro", self.astro_template)
            for i in range(extra_astro_templates)
        ]
        if with_cameraman_template:
            templates.append(self._template("t-cam", "op-cam", self.camera_template))
        snap = GallerySnapshot(
            device_id=device_id,
            version=version,
            contract=self.contract,
            generated_at=generated_at or datetime.now(UTC),
            operators=tuple(operators),
            templates=tuple(templates),
        )
        return sign_envelope(self.key, "k1", "gallery.snapshot", snap.model_dump_json())

    def config(
        self, categories: tuple[CategoryRule, ...] = (CategoryRule(category="N1"),)
    ) -> SignedEnvelope:
        cfg = DeviceConfig(
            device_id=DEVICE,
            kind=DeviceKind.FORKLIFT,
            site_id="site-1",
            config_version=1,
            issued_at=datetime.now(UTC),
            accepted_categories=categories,
        )
        return sign_envelope(self.key, "k1", "device.config", cfg.model_dump_json())

    @staticmethod
    def _template(tid: str, op: str, vec: np.ndarray) -> GalleryTemplate:
        return GalleryTemplate(
            template_id=tid,
            operator_id=op,
            embedding=tuple(float(v) for v in vec),
            quality=0.9,
            source_sha256=hashlib.sha256(vec.tobytes()).hexdigest(),
        )


def astro_operator(*certs: CertificateInfo) -> GalleryOperator:
    return GalleryOperator(
        operator_id="op-astro",
        display_name="张三",
        id_number_masked="3701**********1234",
        employee_no="E100",
        ic_card="CARD-100",
        certificates=certs or (cert("TS-ASTRO-1"),),
    )


def camera_operator(*certs: CertificateInfo) -> GalleryOperator:
    return GalleryOperator(
        operator_id="op-cam",
        display_name="李四",
        id_number_masked="3701**********5678",
        employee_no="E200",
        certificates=certs or (cert("TS-CAM-1"),),
    )


@pytest.fixture(scope="session")
def signer(engine: Any) -> Signer:
    """Templates enrolled from the certificate photos (the originals) with the real engine."""
    from edge_agent.config import ModelsSection  # noqa: F401 - the agent package imports cleanly

    manifest = engine.manifest
    contract = EmbeddingContract(
        pack_name=manifest.name,
        pack_version=manifest.version,
        contract_id=engine.contract_id,
        dim=manifest.embedding.dim,
    )
    enrolled = []
    for photo in (astronaut(), cameraman()):
        got = engine.acquire(photo)
        enrolled.append(engine.embed(got.image, got.face))
    return Signer(Ed25519PrivateKey.generate(), contract, enrolled[0], enrolled[1])


@pytest.fixture(scope="session")
def frames() -> dict[str, list[np.ndarray]]:
    """Cab frames: each person's photo variants at 640x480, and faceless frames."""
    from tests.models.faces import variants

    rng = np.random.default_rng(5)
    blank = [
        np.full((480, 640, 3), 90, np.uint8),
        rng.integers(0, 255, (480, 640, 3), dtype=np.uint8),
    ]
    return {
        "astro": [cab_frame(v) for v in variants(astronaut())],
        "cam": [cab_frame(v) for v in variants(cameraman())],
        "blank": blank,
    }


@pytest.fixture
def make_gate(tmp_path: Path, engine: Any, signer: Signer) -> Iterator[Callable[..., Any]]:
    """Build a CabGate with a simulated interlock; gallery and config seeded from envelopes."""
    from edge_agent.cab.agent import build_gate
    from edge_agent.config import parse_config
    from models.manifest import Calibration, CalibrationBlock
    from models.placeholder import placeholder_calibration

    built: list[Any] = []

    def make(
        snapshot: SignedEnvelope | None = None,
        device_config: SignedEnvelope | None = None,
        calibration: Calibration | None = None,
        **sections: dict[str, Any],
    ) -> Any:
        config = parse_config(base_config(tmp_path, signer.public_b64, **sections))
        cal = calibration or placeholder_calibration(engine.contract_id)
        parts = build_gate(
            config, engine=engine, calibrations=CalibrationBlock(calibrations={"test": cal})
        )
        if snapshot is not False:
            parts.gate.cache.install_snapshot(snapshot or signer.snapshot())
        if device_config is not False:
            parts.gate.cache.install_config(device_config or signer.config())
        built.append(parts)
        return parts

    yield make
    for parts in built:
        parts.close()
