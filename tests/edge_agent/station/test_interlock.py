"""Scan-to-fill interlock against a real pymodbus scale server on localhost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from contract.codes import ReasonCode
from edge_agent.station.config import ModbusScaleDriver, ScaleConfig
from edge_agent.station.domain import CodeScan, FillerLogin, LoginMethod
from edge_agent.station.events import EventFactory, MemorySink
from edge_agent.station.rules import StationRules
from edge_agent.station.scale import ModbusScale, ScaleError, ScaleSet
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.modbus_server import SimModbusScaleServer
from edge_agent.station.sim.runner import SIM_TZ, run_scenario
from edge_agent.station.sim.scenario import (
    Login,
    OpenValve,
    Person,
    Place,
    Remove,
    Scan,
    Scenario,
    make_layout,
    station_config,
)
from edge_agent.station.sim.station import SimScaleBank

LAYOUT = make_layout(cameras=1, zones_per_camera=2)
S1, S2 = (c.scale_id for c in LAYOUT.cells)
UNITS = {1: S1, 2: S2}


@pytest.fixture
def bank() -> SimScaleBank:
    return SimScaleBank([S1, S2])


@pytest.fixture
def server(bank: SimScaleBank) -> Iterator[SimModbusScaleServer]:
    srv = SimModbusScaleServer(bank, UNITS).start()
    yield srv
    srv.stop()


def modbus_config(port: int, **overrides):
    scales = [
        ScaleConfig(id=s, driver=ModbusScaleDriver(port=port, unit_id=u)) for u, s in UNITS.items()
    ]
    return station_config(LAYOUT, reg.STATION_ID, scales=scales, scanners=[], **overrides)


def test_fill_enable_written_only_for_accepted_cylinder(
    server: SimModbusScaleServer, bank: SimScaleBank
) -> None:
    config = modbus_config(server.port)
    scales = ScaleSet.from_config(config.scales)
    sink = MemorySink()
    rules = StationRules(config, reg.sim_registry(), EventFactory("ST", sink), scales, tz=SIM_TZ)
    try:
        # At start-up the agent drives every fill-enable off.
        assert {(w.scale_id, w.value) for w in server.writes} == {(S1, False), (S2, False)}
        server.writes.clear()
        for scale in (S1, S2):
            rules.on_login(FillerLogin(0.0, scale, reg.FILLER, LoginMethod.FACE))
        bank.place(S1, 15.0)
        bank.place(S2, 15.0)
        rules.on_reading(scales.read(S1, 1.0))
        rules.on_reading(scales.read(S2, 1.0))
        assert not rules.on_scan(CodeScan(2.0, S2, reg.FOREIGN))
        assert not rules.on_scan(CodeScan(2.0, S2, reg.UNREGISTERED))
        assert rules.on_scan(CodeScan(2.0, S1, reg.GOOD[0]))
        assert [w for w in server.writes if w.value] == [server.writes[-1]]
        assert server.writes[-1].scale_id == S1 and server.writes[-1].unit_id == 1
        assert all(not w.value for w in server.writes if w.scale_id == S2)
        assert bank.fill_enable(S1) and not bank.fill_enable(S2)
        assert [v.reason for v in sink.violations()] == [
            ReasonCode.FOREIGN_CYLINDER,
            ReasonCode.UNREGISTERED_CYLINDER,
        ]
        # Mass over Modbus: 15 kg tare as 15000 g in two registers.
        assert scales.read(S1, 3.0).gross_kg == pytest.approx(15.0)
    finally:
        scales.close()


def test_scenario_fills_only_through_modbus_enable(
    server: SimModbusScaleServer, bank: SimScaleBank
) -> None:
    """The whole scenario with the interlock on Modbus: gas flows only after the agent's coil write."""
    config = modbus_config(server.port)
    scales = ScaleSet.from_config(config.scales)
    actions = (
        Person(0, S1, True),
        Login(0, S1, reg.FILLER),
        Place(1, S1, reg.GOOD[0]),
        Scan(2, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0),
        Remove(26, S1),
        Person(0, S2, True),
        Login(0, S2, reg.FILLER),
        Place(1, S2, reg.FOREIGN),
        Scan(2, S2, reg.FOREIGN),
        OpenValve(3, S2, 14.0),
        Remove(26, S2),
    )
    sink = MemorySink()
    try:
        result = run_scenario(
            config,
            LAYOUT,
            Scenario("modbus", 30, actions),
            reg.sim_registry(),
            sink,
            scales=scales,
            bank=bank,
        )
    finally:
        scales.close()
    assert [v.reason for v in sink.violations()] == [ReasonCode.FOREIGN_CYLINDER]
    assert [(f.payload.scale_id, f.payload.net_kg) for f in sink.fills()] == [(S1, 14.0)]
    assert [w.value for w in server.writes if w.scale_id == S2 and w.value] == []
    assert any(w.value for w in server.writes if w.scale_id == S1)
    assert result.report.fills_scale == 1


def test_unreachable_scale_fails_closed() -> None:
    config = modbus_config(1)  # nothing listens on port 1
    scales = ScaleSet.from_config(config.scales)
    sink = MemorySink()
    rules = StationRules(config, reg.sim_registry(), EventFactory("ST", sink), scales, tz=SIM_TZ)
    rules.on_login(FillerLogin(0.0, S1, reg.FILLER, LoginMethod.LOGIN))
    assert rules.on_scan(CodeScan(1.0, S1, reg.GOOD[0])) is False
    # The write failed, so the agent does not consider the fill enabled.
    assert not rules.fill_enabled(S1)
    with pytest.raises(ScaleError, match=S1):
        ModbusScale(S1, ModbusScaleDriver(port=1, unit_id=1)).read(0.0)


def test_scale_fault_drops_fill_enable(bank: SimScaleBank) -> None:
    from edge_agent.station.sim.station import SimScale

    layout_config = station_config(LAYOUT, reg.STATION_ID)
    scales = ScaleSet({s: SimScale(bank, s) for s in (S1, S2)})
    rules = StationRules(
        layout_config, reg.sim_registry(), EventFactory("ST", MemorySink()), scales, tz=SIM_TZ
    )
    rules.on_login(FillerLogin(0.0, S1, reg.FILLER, LoginMethod.LOGIN))
    bank.place(S1, 15.0)
    rules.on_reading(scales.read(S1, 0.5))
    assert rules.on_scan(CodeScan(1.0, S1, reg.GOOD[0]))
    assert bank.fill_enable(S1)
    rules.on_scale_fault(S1, "timeout")
    assert not bank.fill_enable(S1) and not rules.fill_enabled(S1)
    # The scan no longer counts: a fill after the fault is unscanned.
    bank.open_valve(OpenValve(2.0, S1, 10.0, bypass=True))
    bank.step(2.0)
    rules.on_reading(scales.read(S1, 3.0))
    assert rules.phase(S1).value == "filling"


def test_build_inputs_opens_real_boundaries_and_closes_on_failure(
    server: SimModbusScaleServer,
) -> None:
    import io

    from edge_agent.station.config import ScannerConfig
    from edge_agent.station.pipeline import build_inputs
    from edge_agent.station.scanner import ScannerError, TcpScanner, WedgeScanner

    base = modbus_config(server.port)
    config = base.model_copy(
        update={
            "cameras": [],
            "zones": [],
            "scanners": [
                ScannerConfig(scale_id=S1, kind="tcp", address="127.0.0.1:9"),
                ScannerConfig(scale_id=S2, kind="wedge"),
            ],
        }
    )
    inputs = build_inputs(config, wedge_stream=io.StringIO(""))
    assert isinstance(inputs.scanners[S1], TcpScanner) and isinstance(
        inputs.scanners[S2], WedgeScanner
    )
    assert inputs.scales.read(S1, 0.0).gross_kg == 0.0
    inputs.scales.close()
    with pytest.raises(ScannerError, match="needs an input stream"):
        build_inputs(config)
