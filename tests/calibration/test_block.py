"""The calibration block: several named calibrations, versioned, backward compatible."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from models.errors import ModelError
from models.manifest import (
    Calibration,
    load_calibration,
    load_manifest,
    put_calibration,
    put_calibrations,
)


@pytest.fixture
def pack(default_pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "jifang-open"
    shutil.copytree(default_pack, target)
    return target


def _cal(contract: str, threshold: float = 0.96) -> Calibration:
    return Calibration(
        threshold=threshold,
        target_fmr=1e-3,
        genuine_pairs=200,
        impostor_pairs=4750,
        contract_id=contract,
    )


def test_a_block_written_before_revisions_still_loads(pack: Path) -> None:
    contract = load_manifest(pack).contract_id
    old = {
        "format": 1,
        "calibrations": {
            "default": {
                "threshold": 0.93,
                "target_fmr": 0.001,
                "genuine_pairs": 10,
                "impostor_pairs": 5000,
                "data": "lfw",
                "contract_id": contract,
                "created": "2026-11-01",
            }
        },
    }
    (pack / "calibration.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    block = load_calibration(pack)
    assert block.revision == 0 and block.calibrations["default"].threshold_ci is None


def test_put_keeps_other_names_and_bumps_the_revision(pack: Path) -> None:
    contract = load_manifest(pack).contract_id
    put_calibration(pack, "han-chinese", _cal(contract, 0.95))
    block = put_calibrations(pack, {"site-jinan-3": _cal(contract, 0.95)})
    assert block.revision == 2
    assert load_calibration(pack) == block
    assert block.calibrations["han-chinese"].threshold == 0.95


def test_put_refuses_a_foreign_contract_or_bad_name_and_writes_nothing(pack: Path) -> None:
    contract = load_manifest(pack).contract_id
    with pytest.raises(ModelError, match="is for contract f+"):
        put_calibrations(pack, {"ok": _cal(contract), "other": _cal("f" * 32)})
    with pytest.raises(ModelError, match="calibration name 'a b'"):
        put_calibration(pack, "a b", _cal(contract))
    assert not (pack / "calibration.yaml").exists()
