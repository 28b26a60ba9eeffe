"""The threaded station pipeline (named workers) on the simulator, in accelerated real time."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from contract.codes import ReasonCode
from edge_agent.station.camera import CallbackCamera
from edge_agent.station.events import MemorySink
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

SPEED = 4.0  # scenario seconds per wall second
LAYOUT = make_layout(cameras=1, zones_per_camera=4)
S1, S2, S3, _ = (c.scale_id for c in LAYOUT.cells)


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
    scenario = Scenario("threaded", 24.0, actions)
    config = station_config(LAYOUT, reg.STATION_ID, rules={"fill_end_stable_s": 2.0})
    station = SimStation(LAYOUT, scenario)
    scanners = {c.scale_id: QueueScanner(c.scale_id) for c in LAYOUT.cells}
    inputs = StationInputs(
        cameras={"cam1": CallbackCamera("cam1", lambda: station.render("cam1"))},
        scales=ScaleSet.from_config(config.scales, sim=dict(station.sim_scales())),
        scanners=dict(scanners),
    )
    t0 = time.monotonic()

    def clock() -> float:
        return (time.monotonic() - t0) * SPEED

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
    )
    pipeline.analyzers["cam1"].set_background(station.empty_frame("cam1"))
    stop = threading.Event()
    threads = pipeline.start(stop)
    assert {t.name for t in threads} >= {
        "station-camera:cam1",
        "station-scales",
        "station-rules",
        f"station-scanner:{S1}",
    }
    while clock() < scenario.duration_s:
        scans, logins = station.advance(clock())
        for scan in scans:
            scanners[scan.scale_id].put(scan.code)
        for login in logins:
            pipeline.login(login)
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    pipeline.close()
    assert sorted(v.reason for v in sink.violations()) == sorted(
        [ReasonCode.FOREIGN_CYLINDER, ReasonCode.UNSCANNED_FILL]
    )
    fills = {f.payload.scale_id: f for f in sink.fills()}
    assert set(fills) == {S1, S3}
    assert fills[S1].reason == ReasonCode.FILL_OK and fills[S1].payload.camera_code == reg.GOOD[0]
    report = pipeline.report()
    assert (report.fills_scale, report.scans_accepted, report.scans_rejected) == (2, 1, 1)
    assert report.fills_camera == 2
    # Shutdown leaves every fill-enable off.
    assert not any(station.scales.fill_enable(c.scale_id) for c in LAYOUT.cells)
