"""The agent's YAML config: validation by field path, env placeholders, and the CLI check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edge_agent.config import ConfigError, load_config, parse_config
from jifang.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "edge_agent" / "cab" / "examples" / "cab.yaml"
ENV = {"JIFANG_DEVICE_KEY": "k" * 32}


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE, env=ENV)
    assert config.device.id == "FL-0001"
    assert config.server.device_key.get_secret_value() == ENV["JIFANG_DEVICE_KEY"]
    assert "k" * 32 not in repr(config), "secrets must not appear in reprs or logs"


def test_unknown_key_is_rejected_with_its_path() -> None:
    data = _example()
    data["gate"]["match_treshold"] = 0.5  # misspelt on purpose
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert ("gate.match_treshold", "Extra inputs are not permitted") in info.value.errors


def test_out_of_range_threshold_is_rejected_with_its_path() -> None:
    data = _example()
    data["gate"]["min_margin"] = 3.0
    data["quality"] = {"min_face_px": 5}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    paths = dict(info.value.errors)
    assert "less than or equal to 1" in paths["gate.min_margin"]
    assert "greater than or equal to 20" in paths["quality.min_face_px"]


def test_missing_environment_variable_names_field_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_example(), env={})
    assert info.value.errors == [
        ("server.device_key", "environment variable JIFANG_DEVICE_KEY is not set")
    ]


def test_placeholder_default_is_used() -> None:
    data = _example()
    data["server"]["url"] = "${JIFANG_SERVER_URL:-http://10.0.0.5:8000}"
    assert parse_config(data, env=ENV).server.url == "http://10.0.0.5:8000"


def test_thresholds_have_bounds_and_descriptions() -> None:
    from edge_agent.config import GateSection, QualitySection

    for section in (GateSection, QualitySection):
        for name, field in section.model_fields.items():
            if field.annotation in (float, int, float | None):
                bounds = [
                    m
                    for m in field.metadata
                    if hasattr(m, "ge") or hasattr(m, "le") or hasattr(m, "gt")
                ]
                assert bounds, f"{section.__name__}.{name} has no bounds"


def test_cli_rejects_unknown_key_and_out_of_range(tmp_path: Path) -> None:
    data = _example()
    data["camera"]["colour"] = "red"
    data["gate"]["frames_required"] = 0
    result = CliRunner().invoke(
        app, ["edge", "validate-config", str(_write(tmp_path, data))], env=ENV
    )
    assert result.exit_code == 1
    assert "camera.colour: Extra inputs are not permitted" in result.output
    assert "gate.frames_required: Input should be greater than or equal to 1" in result.output


def test_cli_accepts_valid_file_and_reports_bad_yaml(tmp_path: Path) -> None:
    ok = CliRunner().invoke(app, ["edge", "validate-config", str(EXAMPLE)], env=ENV)
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output

    broken = tmp_path / "broken.yaml"
    broken.write_text("device: [unclosed\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["edge", "validate-config", str(broken)], env=ENV)
    assert result.exit_code == 1
    assert "not valid YAML" in result.output
    missing = CliRunner().invoke(app, ["edge", "validate-config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1
    assert "cannot read" in missing.output
