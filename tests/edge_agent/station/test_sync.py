"""Registry sync: signature, addressee and age checks; the agent config's station section."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.auth import public_key_b64, sign_envelope
from contract.codes import CertificateStatus, CylinderStatus
from contract.messages import (
    SignedEnvelope,
    StationCylinder,
    StationCylinderType,
    StationFiller,
    StationRegistry,
)
from edge_agent.config import ConfigError, parse_config
from edge_agent.station.agent import StationAgent
from edge_agent.station.domain import CodeScan, ScaleReading
from edge_agent.station.person import PersonModelError
from edge_agent.station.pipeline import StationInputs
from edge_agent.station.scale import ScaleSet
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.connected import sim_agent_config
from edge_agent.station.sim.scenario import make_layout, station_config
from edge_agent.station.sync import RegistrySyncError, SyncedRegistry

KEY = Ed25519PrivateKey.generate()
DEVICE = "station-01"


def message(generated_at: datetime | None = None, **kw: object) -> StationRegistry:
    fields: dict[str, object] = {
        "device_id": DEVICE,
        "station_id": reg.STATION_ID,
        "generated_at": generated_at or datetime.now(UTC),
        "cylinder_types": (StationCylinderType(code="YSP35.5", rated_fill_kg=14.5),),
        "cylinders": (
            StationCylinder(
                code=reg.GOOD[0],
                type_code="YSP35.5",
                owner_station_id=reg.STATION_ID,
                status="in_service",
                manufactured_on=date(2022, 3, 1),
                design_life_years=8,
                next_inspection_due=None,
            ),
            StationCylinder(
                code=reg.SCRAPPED,
                type_code="YSP35.5",
                owner_station_id=reg.STATION_ID,
                status="suspended",
                manufactured_on=date(2022, 3, 1),
                design_life_years=8,
                next_inspection_due=date(2027, 1, 1),
            ),
        ),
        "fillers": (
            StationFiller(
                operator_id="op1",
                certificate_no="A",
                category="R1",
                valid_until=date(2030, 1, 1),
                status=CertificateStatus.VALID,
            ),
            StationFiller(
                operator_id="op1",
                certificate_no="B",
                category="P",
                valid_until=date(2029, 1, 1),
                status=CertificateStatus.VALID,
            ),
            StationFiller(
                operator_id="op2",
                certificate_no="C",
                category="P",
                valid_until=date(2029, 1, 1),
                status=CertificateStatus.SUSPENDED,
            ),
        ),
    }
    fields.update(kw)
    return StationRegistry.model_validate(fields)


def signed(msg: StationRegistry, key: Ed25519PrivateKey = KEY) -> SignedEnvelope:
    return sign_envelope(key, "k1", "station.registry", msg.model_dump_json())


def synced(tmp_path: Path) -> SyncedRegistry:
    return SyncedRegistry(DEVICE, reg.STATION_ID, KEY.public_key(), tmp_path / "reg.json", "P")


def test_install_verifies_maps_and_caches(tmp_path: Path) -> None:
    registry = synced(tmp_path)
    assert registry.synced_at() is None
    registry.install(signed(message()))
    record = registry.cylinder(reg.GOOD[0])
    assert record is not None and record.next_inspection_due == date.min  # unknown: refused
    suspended = registry.cylinder(reg.SCRAPPED)
    assert suspended is not None and suspended.status == CylinderStatus.SUSPENDED
    op1 = registry.filler("op1")
    assert op1 is not None and op1.category == "P" and not op1.revoked
    op2 = registry.filler("op2")
    assert op2 is not None and op2.revoked
    again = synced(tmp_path)
    assert again.load_cache() and again.cylinder(reg.GOOD[0]) is not None


@pytest.mark.parametrize(
    ("envelope", "needle"),
    [
        (signed(message(), Ed25519PrivateKey.generate()), "signature"),
        (signed(message(device_id="other-01")), "for device other-01"),
        (signed(message(station_id="ST-QD-007")), "station ST-QD-007"),
        (sign_envelope(KEY, "k1", "device.config", message().model_dump_json()), "expected"),
    ],
)
def test_install_refuses(tmp_path: Path, envelope: SignedEnvelope, needle: str) -> None:
    registry = synced(tmp_path)
    with pytest.raises(RegistrySyncError, match=needle):
        registry.install(envelope)
    assert registry.synced_at() is None and not (tmp_path / "reg.json").exists()


def test_older_registry_is_not_installed(tmp_path: Path) -> None:
    registry = synced(tmp_path)
    now = datetime.now(UTC)
    registry.install(signed(message(now)))
    with pytest.raises(RegistrySyncError, match="older"):
        registry.install(signed(message(now - timedelta(hours=1))))
    assert registry.synced_at() == now


def test_tampered_cache_is_refused(tmp_path: Path) -> None:
    registry = synced(tmp_path)
    registry.install(signed(message()))
    cache = tmp_path / "reg.json"
    cache.write_text(
        cache.read_text().replace("scrapped", "in_service").replace("suspended", "in_service")
    )
    again = synced(tmp_path)
    assert not again.load_cache()
    assert again.synced_at() is None


class _Scale:
    """A scale that records fill-enable writes."""

    def __init__(self, scale_id: str) -> None:
        self.scale_id = scale_id
        self.writes: list[bool] = []

    def read(self, at: float) -> ScaleReading:
        return ScaleReading(at, self.scale_id, 0.0, False)

    def set_fill_enable(self, enabled: bool) -> None:
        self.writes.append(enabled)

    def close(self) -> None:
        pass


def _agent(tmp_path: Path, public_key: str) -> tuple[StationAgent, _Scale]:
    layout = make_layout(1, 1)
    station = station_config(layout, reg.STATION_ID).model_dump(mode="json")
    station["registry_path"] = str(tmp_path / "reg.json")
    config = sim_agent_config("http://127.0.0.1:9", DEVICE, "k" * 64, public_key, tmp_path, station)
    scale = _Scale(layout.cells[0].scale_id)
    inputs = StationInputs(cameras={}, scales=ScaleSet({scale.scale_id: scale}), scanners={})
    return StationAgent(config, inputs, None), scale


def test_agent_with_the_pose_method_and_no_model_does_not_start(tmp_path: Path) -> None:
    layout = make_layout(1, 1)
    station = station_config(layout, reg.STATION_ID).model_dump(mode="json")
    station["registry_path"] = str(tmp_path / "reg.json")
    station["vision"].update(
        person_method="pose",
        person_model=str(tmp_path / "pose_detection.onnx"),
        person_landmark_model=str(tmp_path / "pose_landmark_full.onnx"),
    )
    config = sim_agent_config(
        "http://127.0.0.1:9", DEVICE, "k" * 64, public_key_b64(KEY.public_key()), tmp_path, station
    )
    inputs = StationInputs(cameras={}, scales=ScaleSet({}), scanners={})
    # Fail closed: no person check, no agent (rather than an agent that never sees a filler).
    with pytest.raises(PersonModelError, match="pose_detection.onnx not found"):
        StationAgent(config, inputs, None)


def test_agent_indicates_never_synced_and_refuses(tmp_path: Path) -> None:
    agent, scale = _agent(tmp_path, public_key_b64(KEY.public_key()))
    doc = agent.write_status()
    assert doc["registry_state"] == "never_synced"
    assert "every scan refused" in doc["indication"]
    assert not agent.pipeline.rules.on_scan(CodeScan(0.0, scale.scale_id, reg.GOOD[0]))
    assert True not in scale.writes
    assert agent.write_status()["scans_refused_stale_registry"] == 1
    agent.outbox.close()


def test_agent_indicates_stale_cache(tmp_path: Path) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    synced(tmp_path).install(signed(message(old)))
    agent, _ = _agent(tmp_path, public_key_b64(KEY.public_key()))
    doc = agent.write_status()
    assert doc["registry_state"] == "stale" and doc["indication"].startswith("registry stale")
    agent.outbox.close()


def test_agent_ready_with_fresh_cache(tmp_path: Path) -> None:
    synced(tmp_path).install(signed(message()))
    agent, _ = _agent(tmp_path, public_key_b64(KEY.public_key()))
    assert agent.write_status()["indication"] == "ready"
    agent.outbox.close()


def _config(kind: str, station: bool) -> dict[str, object]:
    data: dict[str, object] = {
        "device": {"id": "d1", "kind": kind, "site_id": "s1"},
        "server": {"url": "http://127.0.0.1:9", "device_key": "x"},
    }
    if kind != "filling_station":
        data["camera"] = {"source": 0}
    if station:
        data["station"] = {
            "station_id": "ST-1",
            "scales": [{"id": "S1", "driver": {"kind": "sim"}}],
        }
    return data


def test_config_station_section_follows_device_kind() -> None:
    assert parse_config(_config("filling_station", True), "t").station is not None
    with pytest.raises(ConfigError, match="station: Field required"):
        parse_config(_config("filling_station", False), "t")
    with pytest.raises(ConfigError, match="station: a filling-station section; not allowed"):
        parse_config(_config("forklift", True), "t")


def test_config_login_pattern_needs_id_group() -> None:
    data = _config("filling_station", True)
    data["station"]["login_pattern"] = "^OP:(.+)$"  # type: ignore[index]
    with pytest.raises(ConfigError, match="named group 'id'"):
        parse_config(data, "t")


def test_agent_example_is_valid() -> None:
    from edge_agent.config import StationAgentConfig, load_config

    example = Path(__file__).resolve().parents[3] / "edge_agent/station/examples/agent.yaml"
    config = load_config(example, env={"JIFANG_DEVICE_KEY": "k" * 64})
    assert isinstance(config, StationAgentConfig) and config.station.station_id == "ST-JN-001"
