"""Gallery cache: signed snapshots and deltas, persistence, tampering, contract checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.auth import sign_envelope
from contract.codes import ReasonCode
from contract.messages import GalleryDelta
from edge_agent.cab.cache import GALLERY_FILE, GalleryCache
from edge_agent.cab.types import GateFault
from tests.edge_agent.conftest import DEVICE, camera_operator


def _cache(tmp_path: Path, signer, contract_id: str | None = None) -> GalleryCache:
    return GalleryCache(
        tmp_path, DEVICE, contract_id or signer.contract.contract_id, signer.key.public_key()
    )


def _delta(signer, **fields) -> object:
    delta = GalleryDelta(
        device_id=DEVICE,
        from_version=1,
        to_version=2,
        contract=signer.contract,
        generated_at=datetime.now(UTC),
        **fields,
    )
    return sign_envelope(signer.key, "k1", "gallery.delta", delta.model_dump_json())


def test_snapshot_then_delta_persist_and_reload(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    cache.install_snapshot(signer.snapshot())
    cache.install_config(signer.config())
    template = signer._template("t-cam", "op-cam", signer.camera_template)
    cache.apply_delta(
        _delta(signer, upsert_operators=(camera_operator(),), upsert_templates=(template,))
    )
    assert cache.gallery is not None and cache.gallery.version == 2
    assert cache.gallery.operators_with_templates() == 2
    again = _cache(tmp_path, signer)
    again.load()
    assert again.gallery is not None and again.gallery.version == 2
    assert set(again.gallery.operators) == {"op-astro", "op-cam"}
    assert again.device_config is not None
    removal = GalleryDelta(
        device_id=DEVICE,
        from_version=2,
        to_version=3,
        contract=signer.contract,
        generated_at=datetime.now(UTC),
        removed_operator_ids=("op-cam",),
    )
    again.apply_delta(sign_envelope(signer.key, "k1", "gallery.delta", removal.model_dump_json()))
    assert again.gallery.operators_with_templates() == 1


def test_delta_out_of_order_leaves_gallery_untouched(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    cache.install_snapshot(signer.snapshot(version=5))
    before = (tmp_path / GALLERY_FILE).read_text()
    with pytest.raises(GateFault, match="does not follow") as caught:
        cache.apply_delta(_delta(signer))
    assert caught.value.reason == ReasonCode.GALLERY_INVALID
    assert cache.gallery is not None and cache.gallery.version == 5
    assert (tmp_path / GALLERY_FILE).read_text() == before


def test_envelope_signed_by_another_key_is_invalid(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    other = sign_envelope(
        Ed25519PrivateKey.generate(), "k9", "gallery.snapshot", signer.snapshot().payload
    )
    with pytest.raises(GateFault, match="does not verify"):
        cache.install_snapshot(other)
    assert not (tmp_path / GALLERY_FILE).exists()


def test_other_contract_is_refused(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer, contract_id="f" * 32)
    with pytest.raises(GateFault, match="contract"):
        cache.install_snapshot(signer.snapshot())


def test_no_public_key_means_nothing_verifies(tmp_path: Path, signer) -> None:
    cache = GalleryCache(tmp_path, DEVICE, signer.contract.contract_id, None)
    with pytest.raises(GateFault, match="public key"):
        cache.install_snapshot(signer.snapshot())


def test_truncated_file_is_invalid_on_load(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    cache.install_snapshot(signer.snapshot())
    path = tmp_path / GALLERY_FILE
    path.write_text(path.read_text()[:100])
    with pytest.raises(GateFault, match="unreadable"):
        _cache(tmp_path, signer).load()


def test_staleness_uses_the_stricter_limit(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    cache.install_snapshot(signer.snapshot(generated_at=datetime.now(UTC) - timedelta(hours=2)))
    cache.install_config(signer.config())
    cache.require(datetime.now(UTC), max_age_s=86_400)
    with pytest.raises(GateFault) as caught:
        cache.require(datetime.now(UTC), max_age_s=3600)
    assert caught.value.reason == ReasonCode.GALLERY_STALE


def test_no_change_deltas_refresh_age_without_growing_the_chain(tmp_path: Path, signer) -> None:
    cache = _cache(tmp_path, signer)
    cache.install_snapshot(signer.snapshot(generated_at=datetime.now(UTC) - timedelta(days=2)))
    cache.install_config(signer.config())
    for _ in range(3):
        empty = GalleryDelta(
            device_id=DEVICE,
            from_version=1,
            to_version=1,
            contract=signer.contract,
            generated_at=datetime.now(UTC),
        )
        cache.apply_delta(sign_envelope(signer.key, "k1", "gallery.delta", empty.model_dump_json()))
    assert cache.delta_count() == 1
    again = _cache(tmp_path, signer)
    again.load()
    again.require(datetime.now(UTC), max_age_s=3600)  # fresh again after a restart
