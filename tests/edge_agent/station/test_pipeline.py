"""The station pipeline (named workers) on the simulator, stepped on a fake clock.

The workers are loops over one step each (camera frame, scale poll, scanner read, rules drain);
the test plays those steps at the workers' configured periods on scenario time, so nothing
depends on wall time or thread scheduling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from contract.codes import ReasonCode
from edge_agent.station.camera import CallbackCamera, CameraError
from edge_agent.station.config import StationConfig
from edge_agent.station.domain import CodeScan, FillerLogin, LoginMethod
from edge_agent.station.events import MemorySink
from edge_agent.station.evidence import EvidenceRecorder
from edge_agent.station.pipeline import StationInputs, StationPipeline
from edge_agent.station.scale import ScaleSet
from edge_agent.station.scanner import QueueScanner
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.runner import SHIFT_START, SIM_TZ
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
from edge_agent.station.sim.station import SimStation

LAYOUT = make_layout(cameras=1, zones_per_camera=4)
S1, S2, S3, _ = (c.scale_id for c in LAYOUT.cells)


class FakeClock:
    """Agent time (seconds) that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance_to(self, t: float) -> None:
        assert t >= self.now, "time runs forwards"
        self.now = t


@dataclass
class Rig:
    """A pipeline on the simulated station, with the test's handles on its inputs."""

    config: StationConfig
    station: SimStation
    scanners: dict[str, QueueScanner]
    pipeline: StationPipeline
    sink: MemorySink
    clock: FakeClock


def _rig(
    scenario: Scenario,
    render: Callable[[], np.ndarray] | None = None,
    *,
    recorder: Callable[[StationConfig], EvidenceRecorder] | None = None,
    evidence: dict[str, float] | None = None,
    **rules: float,
) -> Rig:
    """The rig; `recorder` builds the evidence recorder, `evidence` overrides its config."""
    config = station_config(LAYOUT, reg.STATION_ID, rules=rules, evidence=evidence or {})
    station = SimStation(LAYOUT, scenario)
    scanners = {c.scale_id: QueueScanner(c.scale_id) for c in LAYOUT.cells}
    inputs = StationInputs(
        cameras={"cam1": CallbackCamera("cam1", render or (lambda: station.render("cam1")))},
        scales=ScaleSet.from_config(config.scales, sim=dict(station.sim_scales())),
        scanners=dict(scanners),
    )
    clock = FakeClock()
    sink = MemorySink()
    pipeline = StationPipeline(
        config,
        inputs,
        reg.sim_registry(),
        sink,
        "STATION-SIM",
        clock=clock,
        wall_clock=lambda t: SHIFT_START + timedelta(seconds=t),
        tz=SIM_TZ,
        evidence=recorder(config) if recorder is not None else None,
    )
    pipeline.analyzers["cam1"].set_background(station.empty_frame("cam1"))
    return Rig(config, station, scanners, pipeline, sink, clock)


def _play(rig: Rig, duration_s: float) -> None:
    """Run every worker's step when it falls due, as the threads would, on the fake clock."""
    pipeline, clock = rig.pipeline, rig.clock
    # Whole milliseconds, so the schedule does not drift with float sums.
    period_ms = {
        "camera:cam1": round(1000 / rig.config.cameras[0].max_fps),
        "scales": round(1000 * min(s.poll_interval_s for s in rig.config.scales)),
    }
    due_ms = dict.fromkeys(period_ms, 0)
    while (now_ms := min(due_ms.values())) <= duration_s * 1000:
        clock.advance_to(now_ms / 1000)
        scans, logins = rig.station.advance(clock())
        for login in logins:
            pipeline.login(login)
        for scan in scans:
            # The scanner worker reads a code as soon as it is scanned.
            rig.scanners[scan.scale_id].put(scan.code)
            assert pipeline.scanner_step(scan.scale_id, 0.0)
        pipeline.drain()
        for name in sorted(n for n, at in due_ms.items() if at == now_ms):
            if name == "scales":
                pipeline.scale_step()
            else:
                assert pipeline.camera_step("cam1")
            # The rules worker keeps up: inputs are judged in arrival order.
            pipeline.drain()
            due_ms[name] += period_ms[name]


def test_workers_run_a_short_shift_and_stop() -> None:
    actions = (
        Person(0, S1, True),
        Login(0.5, S1, reg.FILLER),
        Place(1, S1, reg.GOOD[0]),
        Scan(2, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, rate_kg_s=2.0),
        Person(0, S2, True),
        Login(0.5, S2, reg.FILLER),
        Place(1, S2, reg.FOREIGN),
        Scan(2, S2, reg.FOREIGN),
        OpenValve(3, S2, 14.0, rate_kg_s=2.0),
        Person(0, S3, True),
        Place(1, S3, reg.GOOD[1]),
        OpenValve(3, S3, 14.0, bypass=True, rate_kg_s=2.0),
        Remove(20, S1),
        Remove(20, S2),
        Remove(20, S3),
    )
    scenario = Scenario("stepped", 24.0, actions)
    rig = _rig(scenario, fill_end_stable_s=2.0)
    station, pipeline, sink = rig.station, rig.pipeline, rig.sink
    assert [name for name, _ in pipeline.workers()] == [
        "camera:cam1",
        "scales",
        *(f"scanner:{c.scale_id}" for c in LAYOUT.cells),
        "rules",
    ]
    _play(rig, scenario.duration_s)
    pipeline.close()
    assert not pipeline.dropped and not pipeline.faults
    assert sorted(v.reason for v in sink.violations()) == sorted(
        [ReasonCode.FOREIGN_CYLINDER, ReasonCode.UNSCANNED_FILL]
    )
    fills = {f.payload.scale_id: f for f in sink.fills()}
    assert set(fills) == {S1, S3}
    assert fills[S1].reason == ReasonCode.FILL_OK and fills[S1].payload.camera_code == reg.GOOD[0]
    report = pipeline.report()
    assert (report.fills_scale, report.scans_accepted, report.scans_rejected) == (2, 1, 1)
    assert report.fills_camera == 2
    assert report.ended_at - report.started_at == timedelta(seconds=scenario.duration_s)
    # Shutdown leaves every fill-enable off.
    assert not any(station.scales.fill_enable(c.scale_id) for c in LAYOUT.cells)


def test_badge_scan_is_a_login_and_device_errors_are_counted() -> None:
    def broken() -> np.ndarray:
        raise CameraError("cam1: no frame")

    rig = _rig(Scenario("idle", 1.0, ()), render=broken)
    scanners, pipeline = rig.scanners, rig.pipeline
    rig.clock.advance_to(5.0)
    scanners[S1].put(f"OP:{reg.FILLER}")
    scanners[S2].put(reg.GOOD[0])
    assert pipeline.scanner_step(S1, 0.0)
    assert pipeline.scanner_step(S2, 0.0)
    assert pipeline.scanner_step(S3, 0.0)  # nothing scanned: no input, no fault
    queued = [pipeline.inbox.get_nowait() for _ in range(pipeline.inbox.qsize())]
    assert queued == [
        FillerLogin(5.0, S1, reg.FILLER, LoginMethod.LOGIN),
        CodeScan(5.0, S2, reg.GOOD[0]),
    ]
    assert not pipeline.camera_step("cam1")
    assert pipeline.faults == {"camera:cam1": 1}
    assert pipeline.inbox.empty() and pipeline.drain() == 0


def test_stop_drains_queued_inputs_and_every_worker_ends() -> None:
    rig = _rig(Scenario("idle", 1.0, ()))
    station, pipeline, sink = rig.station, rig.pipeline, rig.sink
    # Arrived before stop: the rules worker must still judge it.
    pipeline.inbox.put(CodeScan(0.0, S2, reg.FOREIGN))
    stop = threading.Event()
    stop.set()
    threads = pipeline.start(stop)
    assert {t.name for t in threads} == {f"station-{name}" for name, _ in pipeline.workers()}
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    pipeline.close()
    assert pipeline.inbox.empty()
    assert pipeline.rules.counters.scans_rejected == 1
    assert [v.payload.scale_id for v in sink.violations()] == [S2]
    assert not any(station.scales.fill_enable(c.scale_id) for c in LAYOUT.cells)
