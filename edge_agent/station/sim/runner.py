"""Runs a scenario through the real station code: rendered frames -> zones -> rules -> events."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from edge_agent.station.config import StationConfig
from edge_agent.station.events import EventFactory, EventSink
from edge_agent.station.evidence import EvidenceRecorder
from edge_agent.station.registry import CylinderRegistry
from edge_agent.station.report import ShiftReport, build_report
from edge_agent.station.rules import FillInterlock, StationRules
from edge_agent.station.scale import ScaleSet
from edge_agent.station.sim.scenario import Scenario, SimLayout
from edge_agent.station.sim.station import SimScaleBank, SimStation
from edge_agent.station.vision import ZoneAnalyzer

logger = logging.getLogger(__name__)

SHIFT_START = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
"""Scenario time 0 (08:00 China time): fixed so registry dates in tests stay meaningful."""

SIM_TZ = ZoneInfo("Asia/Shanghai")
"""The simulated station's zone (device.timezone's default): registry dates are China dates."""


@dataclass
class ScenarioResult:
    """What a scenario run produced."""

    report: ShiftReport
    rules: StationRules
    station: SimStation


def run_scenario(
    config: StationConfig,
    layout: SimLayout,
    scenario: Scenario,
    registry: CylinderRegistry,
    sink: EventSink,
    *,
    device_id: str = "STATION-SIM",
    scales: ScaleSet | None = None,
    bank: SimScaleBank | None = None,
    seed: int = 0,
    start: datetime = SHIFT_START,
    tz: tzinfo = SIM_TZ,
    evidence: EvidenceRecorder | None = None,
) -> ScenarioResult:
    """Play `scenario` tick by tick.

    Without `scales` the rules talk to the simulated scales directly; with `scales` (e.g. Modbus
    drivers in front of `bank`) readings and fill-enable writes go through those drivers.
    With `evidence`, every rendered frame is kept and flagged events carry their frame.
    """
    station = SimStation(layout, scenario, seed=seed, bank=bank)
    interlock: FillInterlock = scales if scales is not None else station.scales
    events = EventFactory(
        device_id, sink, wall_clock=lambda t: start + timedelta(seconds=t), evidence=evidence
    )
    rules = StationRules(config, registry, events, interlock, tz=tz)
    analyzers = [
        ZoneAnalyzer(cam.id, config.zones, config.vision, (cam.width, cam.height))
        for cam in config.cameras
    ]
    for analyzer in analyzers:
        analyzer.set_background(station.empty_frame(analyzer.camera_id))
    steps = int(round(scenario.duration_s / scenario.tick_s))
    for step in range(steps + 1):
        t = step * scenario.tick_s
        scans, logins = station.advance(t)
        for login in logins:
            rules.on_login(login)
        for scan in scans:
            rules.on_scan(scan)
        for scale in config.scales:
            reading = (
                scales.read(scale.id, t) if scales is not None else station.scales.read(scale.id, t)
            )
            rules.on_reading(reading)
        for analyzer in analyzers:
            frame = station.render(analyzer.camera_id)
            observations = analyzer.process(frame, t)
            if evidence is not None:
                evidence.keep(analyzer.camera_id, t, frame, analyzer)
            for obs in observations:
                rules.on_observation(obs)
    report = build_report(
        config.station_id, rules.counters, start, start + timedelta(seconds=scenario.duration_s)
    )
    return ScenarioResult(report, rules, station)
