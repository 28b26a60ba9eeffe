"""StationConfig validation, the registry cache file, and the shift report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edge_agent.station.config import StationConfig
from edge_agent.station.registry import LocalRegistry, RegistryError
from edge_agent.station.sim import registry as reg

EXAMPLE = (
    Path(__file__).resolve().parents[3] / "edge_agent" / "station" / "examples" / "station.yaml"
)


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def test_example_is_valid() -> None:
    config = StationConfig.model_validate(_example())
    assert [s.driver.kind for s in config.scales] == ["modbus", "line"]
    assert config.rules.overfill_tolerance_kg == 0.2


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["zones"][0].update(scale_id="S999"), "scale_id 'S999' is not a scale"),
        (lambda d: d["zones"][1].update(camera_id="camX"), "zones.1.camera_id"),
        (lambda d: d["scanners"][0].update(scale_id="nope"), "scanners.0.scale_id"),
        (lambda d: d["rules"].update(overfill_tolerance_kg=-1), "rules.overfill_tolerance_kg"),
        (lambda d: d["rules"].update(disabled=["NOT_A_CODE"]), "NOT_A_CODE"),
        (lambda d: d["zones"][0].update(polygon=[[0, 0], [1, 1]]), "zones.0.polygon"),
        (lambda d: d.update(colour="blue"), "colour"),
        (lambda d: d["scales"][0]["driver"].update(kind="canbus"), "scales.0.driver"),
        (lambda d: d["scales"].append(dict(d["scales"][0])), "ids must be unique"),
        (
            lambda d: d.update(vision={"person_method": "pose", "person_model": "p.onnx"}),
            "vision.person_landmark_model is required",
        ),
        (lambda d: d.update(vision={"person_max_tilt_deg": -1}), "vision.person_max_tilt_deg"),
        (
            lambda d: d.update(vision={"person_confirm_checks": 5}),
            "person_confirm_checks must not exceed person_window_checks",
        ),
    ],
)
def test_bad_config_names_the_field(mutate, path: str) -> None:
    data = _example()
    mutate(data)
    with pytest.raises(ValidationError) as info:
        StationConfig.model_validate(data)
    text = str(info.value)
    dotted = text.replace("\n  ", ".").replace("\n", " ")
    assert path in text or path in dotted


def test_registry_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg.sim_registry().save(path)
    loaded = LocalRegistry.load(path)
    assert loaded.cylinder(reg.ENTRUSTED) == reg.sim_registry().cylinder(reg.ENTRUSTED)
    assert loaded.cylinder_type(reg.LPG_15KG.code) == reg.LPG_15KG
    assert loaded.filler(reg.FILLER_EXPIRED) == reg.sim_registry().filler(reg.FILLER_EXPIRED)
    assert loaded.synced_at() == reg.SYNCED_AT
    assert not list(tmp_path.glob("*.tmp"))


def test_registry_cache_bad_row_names_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg.sim_registry().save(path)
    data = json.loads(path.read_text())
    data["cylinders"][3]["next_inspection_due"] = "someday"
    path.write_text(json.dumps(data))
    with pytest.raises(RegistryError, match=r"registry.json: cylinders.3"):
        LocalRegistry.load(path)
    data["cylinders"][3]["next_inspection_due"] = "2027-01-01"
    data["synced_at"] = "2026-05-31T22:00:00"
    path.write_text(json.dumps(data))
    with pytest.raises(RegistryError, match="synced_at must carry a timezone"):
        LocalRegistry.load(path)
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read"):
        LocalRegistry.load(path)
