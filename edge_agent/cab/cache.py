"""Gallery and device-config cache: server-signed envelopes, verified before every use.

The cache keeps the signed envelopes themselves on disk (a snapshot plus the deltas since),
so a tampered file is caught at load time exactly as a tampered download would be.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from contract.auth import SignatureError, verify_envelope
from contract.codes import ReasonCode
from contract.messages import (
    DeviceConfig,
    GalleryDelta,
    GalleryOperator,
    GallerySnapshot,
    GalleryTemplate,
    SignedEnvelope,
)
from edge_agent.cab.types import GateFault
from models.gallery import Gallery

logger = logging.getLogger(__name__)

GALLERY_FILE = "gallery.envelopes.json"
CONFIG_FILE = "device_config.envelope.json"


@dataclass
class LocalGallery:
    """A verified gallery: operators, their templates, and a 1:N index by operator id."""

    device_id: str
    version: int
    contract_id: str
    dim: int
    generated_at: datetime
    operators: dict[str, GalleryOperator] = field(default_factory=dict)
    templates: dict[str, GalleryTemplate] = field(default_factory=dict)

    _index: Gallery | None = field(default=None, repr=False)

    def index(self) -> Gallery:
        """A `models.gallery.Gallery` labelled by operator id (built once per object)."""
        if self._index is None:
            by_operator: dict[str, list[tuple[float, ...]]] = {}
            for template in self.templates.values():
                by_operator.setdefault(template.operator_id, []).append(template.embedding)
            gallery = Gallery(self.dim)
            for operator_id, rows in by_operator.items():
                gallery.add(operator_id, np.asarray(rows, np.float32))
            self._index = gallery
        return self._index

    def operator_templates(self, operator_id: str) -> np.ndarray:
        """The templates of one operator as an (n, dim) matrix (n may be 0)."""
        rows = [t.embedding for t in self.templates.values() if t.operator_id == operator_id]
        return np.asarray(rows, np.float32).reshape(len(rows), self.dim)

    def operators_with_templates(self) -> int:
        """How many operators could be matched 1:N."""
        return len({t.operator_id for t in self.templates.values()})

    def template_count(self) -> int:
        """How many templates a 1:N search compares a probe with: the N of the false-match
        risk, since a match against any template of any operator is a match."""
        return len(self.templates)


def _verified(public_key: Ed25519PublicKey, envelope: SignedEnvelope) -> str:
    try:
        return verify_envelope(public_key, envelope)
    except SignatureError as err:
        raise GateFault(ReasonCode.GALLERY_INVALID, str(err)) from err


def _from_snapshot(snapshot: GallerySnapshot) -> LocalGallery:
    return LocalGallery(
        device_id=snapshot.device_id,
        version=snapshot.version,
        contract_id=snapshot.contract.contract_id,
        dim=snapshot.contract.dim,
        generated_at=snapshot.generated_at,
        operators={o.operator_id: o for o in snapshot.operators},
        templates={t.template_id: t for t in snapshot.templates},
    )


def _apply_delta(gallery: LocalGallery, delta: GalleryDelta) -> None:
    if delta.from_version != gallery.version:
        raise GateFault(
            ReasonCode.GALLERY_INVALID,
            f"delta from version {delta.from_version} does not follow version {gallery.version}",
        )
    if delta.contract.contract_id != gallery.contract_id:
        raise GateFault(ReasonCode.GALLERY_INVALID, "delta is for another embedding contract")
    for operator_id in delta.removed_operator_ids:
        gallery.operators.pop(operator_id, None)
        for template_id in [
            k for k, t in gallery.templates.items() if t.operator_id == operator_id
        ]:
            del gallery.templates[template_id]
    for template_id in delta.removed_template_ids:
        gallery.templates.pop(template_id, None)
    gallery.operators.update({o.operator_id: o for o in delta.upsert_operators})
    for template in delta.upsert_templates:
        if template.operator_id not in gallery.operators:
            raise GateFault(
                ReasonCode.GALLERY_INVALID,
                f"delta template {template.template_id} names unknown operator "
                f"{template.operator_id}",
            )
        gallery.templates[template.template_id] = template
    gallery.version = delta.to_version
    gallery.generated_at = delta.generated_at


def _is_empty(delta: GalleryDelta) -> bool:
    return delta.from_version == delta.to_version and not (
        delta.upsert_operators
        or delta.upsert_templates
        or delta.removed_operator_ids
        or delta.removed_template_ids
    )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class GalleryCache:
    """The device's gallery and config, persisted as signed envelopes under `store_dir`."""

    def __init__(
        self,
        store_dir: Path,
        device_id: str,
        contract_id: str,
        public_key: Ed25519PublicKey | None,
    ) -> None:
        self.store_dir = store_dir
        self.device_id = device_id
        self.contract_id = contract_id
        self.public_key = public_key
        self._envelopes: list[SignedEnvelope] = []
        self.gallery: LocalGallery | None = None
        self.device_config: DeviceConfig | None = None

    def _key(self) -> Ed25519PublicKey:
        if self.public_key is None:
            raise GateFault(
                ReasonCode.GALLERY_INVALID,
                "no server public key configured (server.public_key): nothing can be verified",
            )
        return self.public_key

    def _parse_snapshot(self, envelope: SignedEnvelope) -> GallerySnapshot:
        if envelope.payload_type != "gallery.snapshot":
            raise GateFault(ReasonCode.GALLERY_INVALID, "first gallery envelope is not a snapshot")
        text = _verified(self._key(), envelope)
        try:
            snapshot = GallerySnapshot.model_validate_json(text)
        except ValidationError as err:
            raise GateFault(ReasonCode.GALLERY_INVALID, f"gallery snapshot: {err}") from err
        self._check_owner(snapshot.device_id, snapshot.contract.contract_id)
        return snapshot

    def _parse_delta(self, envelope: SignedEnvelope) -> GalleryDelta:
        if envelope.payload_type != "gallery.delta":
            raise GateFault(ReasonCode.GALLERY_INVALID, "expected a gallery delta envelope")
        text = _verified(self._key(), envelope)
        try:
            delta = GalleryDelta.model_validate_json(text)
        except ValidationError as err:
            raise GateFault(ReasonCode.GALLERY_INVALID, f"gallery delta: {err}") from err
        self._check_owner(delta.device_id, delta.contract.contract_id)
        return delta

    def _check_owner(self, device_id: str, contract_id: str) -> None:
        if device_id != self.device_id:
            raise GateFault(
                ReasonCode.GALLERY_INVALID, f"gallery is for device {device_id}, not this one"
            )
        if contract_id != self.contract_id:
            raise GateFault(
                ReasonCode.GALLERY_INVALID,
                f"gallery templates use contract {contract_id}, the loaded pack is "
                f"{self.contract_id}",
            )

    def install_snapshot(self, envelope: SignedEnvelope) -> LocalGallery:
        """Verify a snapshot envelope, make it the gallery, and persist it."""
        gallery = _from_snapshot(self._parse_snapshot(envelope))
        self._envelopes = [envelope]
        self.gallery = gallery
        self._persist()
        logger.info(
            "gallery version %d installed (%d templates)", gallery.version, len(gallery.templates)
        )
        return gallery

    def apply_delta(self, envelope: SignedEnvelope) -> LocalGallery:
        """Verify a delta envelope and apply it to the current gallery; persist on success."""
        if self.gallery is None:
            raise GateFault(ReasonCode.GALLERY_INVALID, "a delta arrived before any snapshot")
        delta = self._parse_delta(envelope)
        # Work on a copy so a bad delta leaves the verified gallery untouched.
        candidate = LocalGallery(
            self.gallery.device_id,
            self.gallery.version,
            self.gallery.contract_id,
            self.gallery.dim,
            self.gallery.generated_at,
            dict(self.gallery.operators),
            dict(self.gallery.templates),
        )
        _apply_delta(candidate, delta)
        if _is_empty(delta) and len(self._envelopes) > 1 and self._last_is_empty():
            # A no-change delta only refreshes the gallery's age: keep the latest one only.
            self._envelopes.pop()
        self._envelopes.append(envelope)
        self.gallery = candidate
        self._persist()
        return candidate

    def delta_count(self) -> int:
        """Signed deltas stored on top of the snapshot."""
        return max(0, len(self._envelopes) - 1)

    def _last_is_empty(self) -> bool:
        last = self._envelopes[-1]
        if last.payload_type != "gallery.delta":
            return False
        # Already verified when it was applied; parsed again only to look at its content.
        return _is_empty(GalleryDelta.model_validate_json(last.payload))

    def install_config(self, envelope: SignedEnvelope) -> DeviceConfig:
        """Verify and keep the server-pushed DeviceConfig."""
        if envelope.payload_type != "device.config":
            raise GateFault(ReasonCode.GALLERY_INVALID, "expected a device.config envelope")
        text = _verified(self._key(), envelope)
        try:
            config = DeviceConfig.model_validate_json(text)
        except ValidationError as err:
            raise GateFault(ReasonCode.GALLERY_INVALID, f"device config: {err}") from err
        if config.device_id != self.device_id:
            raise GateFault(ReasonCode.GALLERY_INVALID, "device config is for another device")
        self.device_config = config
        _write_atomic(self.store_dir / CONFIG_FILE, envelope.model_dump_json())
        return config

    def _persist(self) -> None:
        text = json.dumps([e.model_dump(mode="json") for e in self._envelopes])
        _write_atomic(self.store_dir / GALLERY_FILE, text)

    def load(self) -> None:
        """Re-verify what is on disk; raise GateFault(GALLERY_INVALID) on any defect."""
        path = self.store_dir / GALLERY_FILE
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                envelopes = [SignedEnvelope.model_validate(item) for item in raw]
            except (OSError, ValueError, TypeError, ValidationError) as err:
                raise GateFault(ReasonCode.GALLERY_INVALID, f"{path}: unreadable ({err})") from err
            if not envelopes:
                raise GateFault(ReasonCode.GALLERY_INVALID, f"{path}: holds no envelope")
            gallery = _from_snapshot(self._parse_snapshot(envelopes[0]))
            for envelope in envelopes[1:]:
                _apply_delta(gallery, self._parse_delta(envelope))
            self._envelopes, self.gallery = envelopes, gallery
        config_path = self.store_dir / CONFIG_FILE
        if config_path.is_file():
            try:
                envelope = SignedEnvelope.model_validate_json(config_path.read_text("utf-8"))
            except (OSError, ValueError, ValidationError) as err:
                raise GateFault(
                    ReasonCode.GALLERY_INVALID, f"{config_path}: unreadable ({err})"
                ) from err
            self.install_config(envelope)

    def require(self, now: datetime, max_age_s: float) -> tuple[LocalGallery, DeviceConfig]:
        """The gallery and config to decide with, or GateFault (invalid, missing, stale)."""
        if self.gallery is None:
            raise GateFault(ReasonCode.GALLERY_INVALID, "no verified gallery on this device")
        if self.device_config is None:
            raise GateFault(ReasonCode.GALLERY_INVALID, "no verified device config on this device")
        age = (now - self.gallery.generated_at).total_seconds()
        limit = min(max_age_s, self.device_config.max_gallery_age_s)
        if age > limit:
            raise GateFault(
                ReasonCode.GALLERY_STALE,
                f"gallery version {self.gallery.version} is {age:.0f} s old (limit {limit:.0f} s)",
            )
        return self.gallery, self.device_config
