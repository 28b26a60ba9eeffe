"""The placeholder calibration: one hand-picked value, labelled as measured on nothing."""

from __future__ import annotations

from pathlib import Path

from models.manifest import CALIBRATION_NAME, load_calibration
from models.placeholder import PLACEHOLDER_THRESHOLD, placeholder_calibration, placeholder_pack

CONTRACT = "0123456789abcdef"


def test_placeholder_says_it_is_not_a_calibration() -> None:
    cal = placeholder_calibration(CONTRACT)
    assert cal.threshold == PLACEHOLDER_THRESHOLD
    assert cal.genuine_pairs == 0 and cal.supported_fmr <= cal.target_fmr
    assert "NOT a calibration" in cal.data
    assert placeholder_calibration(CONTRACT, impostor_pairs=1000).supported_fmr > cal.target_fmr


def test_placeholder_pack_links_the_base_and_replaces_its_calibrations(tmp_path: Path) -> None:
    base = tmp_path / "base" / "jifang-open"
    base.mkdir(parents=True)
    (base / "manifest.yaml").write_text("name: x\n", encoding="utf-8")
    (base / CALIBRATION_NAME).write_text("calibrations: {}\n", encoding="utf-8")
    pack = placeholder_pack(base, tmp_path / "packs", CONTRACT, "site")
    assert pack == tmp_path / "packs" / "jifang-open"
    assert (pack / "manifest.yaml").resolve() == (base / "manifest.yaml").resolve()
    assert not (pack / CALIBRATION_NAME).is_symlink()
    assert load_calibration(pack).calibrations == {"site": placeholder_calibration(CONTRACT)}
    # Again into the same folder (the demo reuses its work folder): same result.
    assert load_calibration(placeholder_pack(base, tmp_path / "packs", CONTRACT, "site"))
