"""The agent's YAML config: validation by field path, env placeholders, and the CLI check."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from edge_agent.config import (
    CabAgentConfig,
    ConfigError,
    StationAgentConfig,
    load_config,
    parse_config,
)
from jifang.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "edge_agent" / "cab" / "examples" / "cab.yaml"
STATION_EXAMPLE = REPO / "edge_agent" / "station" / "examples" / "agent.yaml"
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


def _station_example() -> dict:
    return yaml.safe_load(STATION_EXAMPLE.read_text(encoding="utf-8"))


def test_device_kind_picks_the_agent_config() -> None:
    assert isinstance(parse_config(_example(), env=ENV), CabAgentConfig)
    station = parse_config(_station_example(), env=ENV)
    assert isinstance(station, StationAgentConfig)
    assert not hasattr(station, "camera") and not hasattr(station, "gate")


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("gate", {"window_s": 3.0}),
        ("camera", {"source": 0}),
        ("claims", {"max_1n_risk": 0.0}),
        ("liveness", {"policy": "none"}),
        ("interlock", {"driver": "simulated"}),
        ("models", {"pack": "jifang-open"}),
    ],
)
def test_station_config_with_a_cab_section_is_refused_naming_it(section: str, value: dict) -> None:
    data = _station_example()
    data[section] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    paths = dict(info.value.errors)
    assert list(paths) == [section], info.value.errors
    assert "cab section" in paths[section] and "filling_station" in paths[section]


def test_cab_config_with_a_station_section_is_refused_naming_it() -> None:
    data = _example()
    data["station"] = _station_example()["station"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert [path for path, _ in info.value.errors] == ["station"]


def test_cab_config_without_camera_is_refused() -> None:
    data = _example()
    del data["camera"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert info.value.errors == [("camera", "Field required")]


def test_station_config_without_station_section_is_refused() -> None:
    data = _station_example()
    del data["station"]
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert info.value.errors == [("station", "Field required")]


@pytest.mark.parametrize("kind", [None, "truck"])
def test_missing_or_unknown_device_kind_names_device_kind(kind: str | None) -> None:
    data = _example()
    if kind is None:
        del data["device"]["kind"]
    else:
        data["device"]["kind"] = kind
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=ENV)
    assert [path for path, _ in info.value.errors] == ["device.kind"]
    assert "filling_station" in info.value.errors[0][1]


def test_error_paths_carry_no_union_tag() -> None:
    data = _example()
    data["gate"]["window_s"] = 0.0
    station = _station_example()
    station["station"]["status_interval_s"] = 0.0
    with pytest.raises(ConfigError) as cab:
        parse_config(data, env=ENV)
    with pytest.raises(ConfigError) as st:
        parse_config(station, env=ENV)
    assert [p for p, _ in cab.value.errors] == ["gate.window_s"]
    assert [p for p, _ in st.value.errors] == ["station.status_interval_s"]


def _leaves(annotation: object) -> list[object]:
    """The types inside Optional/Union/list/tuple/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    return [annotation]


def _numeric_fields(model: type[BaseModel], path: str) -> Iterator[tuple[str, str | None]]:
    """(path, description) of every int/float field in the model tree below `model`."""
    for name, field in model.model_fields.items():
        where = f"{path}.{name}" if path else name
        leaves = _leaves(field.annotation)
        for leaf in leaves:
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                yield from _numeric_fields(leaf, f"{where}[{leaf.__name__}]")
        if any(
            isinstance(leaf, type) and issubclass(leaf, int | float) and leaf is not bool
            for leaf in leaves
        ):
            yield where, field.description


@pytest.mark.parametrize("root", [CabAgentConfig, StationAgentConfig])
def test_every_threshold_has_a_description(root: type[BaseModel]) -> None:
    fields = list(_numeric_fields(root, ""))
    # The walk reaches the nested sections: liveness (models.liveness), station scales, rules.
    assert len(fields) > 30
    missing = [path for path, description in fields if not (description or "").strip()]
    assert not missing, f"numeric config fields without a description: {missing}"


def test_cli_validates_both_shipped_examples() -> None:
    for example, kind in ((EXAMPLE, "forklift"), (STATION_EXAMPLE, "filling_station")):
        result = CliRunner().invoke(app, ["edge", "validate-config", str(example)], env=ENV)
        assert result.exit_code == 0, result.output
        assert f"OK ({kind}" in result.output


def test_cli_names_the_cab_section_on_a_station(tmp_path: Path) -> None:
    data = _station_example()
    data["gate"] = {"window_s": 3.0}
    result = CliRunner().invoke(
        app, ["edge", "validate-config", str(_write(tmp_path, data))], env=ENV
    )
    assert result.exit_code == 1
    assert "  gate: a cab section; not allowed when device.kind is filling_station" in result.output
