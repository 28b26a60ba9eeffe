"""A placeholder calibration for demos, tests and benchmarks: a fixed value, measured on nothing.

The open pack ships without a calibration and the cab gate refuses 1:N without one;
`jifang calibrate threshold` makes a real one from a site's photos. The placeholder lets the
gate run where no site photos exist. Its threshold was picked by hand; it was NOT measured on
any data and must never be deployed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.manifest import CALIBRATION_NAME, Calibration, CalibrationBlock, write_calibration

logger = logging.getLogger(__name__)

PLACEHOLDER_THRESHOLD = 0.92
"""Cosine threshold of the placeholder: a hand-picked value, not measured on any data."""
PLACEHOLDER_TARGET_FMR = 1e-3
PLACEHOLDER_IMPOSTOR_PAIRS = 3000
"""Declared so that the placeholder nominally supports FMR 1e-3 (rule of three)."""


def placeholder_calibration(
    contract_id: str, impostor_pairs: int = PLACEHOLDER_IMPOSTOR_PAIRS
) -> Calibration:
    """The placeholder calibration for a pack's contract id (fewer pairs: a too-thin one)."""
    return Calibration(
        threshold=PLACEHOLDER_THRESHOLD,
        target_fmr=PLACEHOLDER_TARGET_FMR,
        genuine_pairs=0,
        impostor_pairs=impostor_pairs,
        data="placeholder: NOT a calibration, measured on no data; never deploy",
        contract_id=contract_id,
        method="fixed value for demos, tests and benchmarks",
    )


def placeholder_pack(base: Path, root: Path, contract_id: str, name: str) -> Path:
    """`base`'s files linked into root/<pack name>, with the placeholder as calibration `name`."""
    pack = root / base.name
    pack.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        target = pack / item.name
        # The base pack's own calibrations are not carried over: only the placeholder is there.
        if item.name != CALIBRATION_NAME and not target.exists():
            target.symlink_to(item.resolve())
    block = CalibrationBlock(calibrations={name: placeholder_calibration(contract_id)})
    write_calibration(pack, block)
    logger.info("placeholder calibration %r written to %s (not for deployment)", name, pack)
    return pack
