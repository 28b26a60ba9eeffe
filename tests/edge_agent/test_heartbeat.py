"""Heartbeats follow server.heartbeat_interval_s in both agents, on a fake clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.codes import GateState
from contract.messages import Heartbeat
from edge_agent.heartbeat import run_heartbeat
from edge_agent.uplink import UplinkError

BEATS = 4


class FakeClock:
    """Seconds that pass only when a worker waits."""

    def __init__(self) -> None:
        self.t = 0.0


class ClockedStop(threading.Event):
    """A stop event whose wait advances the fake clock instead of sleeping; set after `waits`."""

    def __init__(self, clock: FakeClock, waits: int) -> None:
        super().__init__()
        self.clock = clock
        self.waits_left = waits
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        self.clock.t += timeout or 0.0
        self.waits_left -= 1
        if self.waits_left <= 0:
            self.set()
        return self.is_set()


class RecordingUplink:
    """Records each heartbeat with the fake time it was sent; nothing else is expected."""

    def __init__(self, clock: FakeClock, fail_first: int = 0) -> None:
        self.clock = clock
        self.fail_first = fail_first
        self.beats: list[tuple[float, Heartbeat]] = []
        self.other_calls: list[str] = []

    def heartbeat(self, beat: Heartbeat) -> None:
        self.beats.append((self.clock.t, beat))
        if len(self.beats) <= self.fail_first:
            raise UplinkError("server unreachable")

    def __getattr__(self, name: str) -> Any:
        # Any other uplink call (gallery, config, events) fails like an unreachable server.
        def call(*_args: object, **_kwargs: object) -> Any:
            self.other_calls.append(name)
            raise UplinkError(f"{name}: not in this test")

        return call


def _spacing(uplink: RecordingUplink) -> list[float]:
    times = [t for t, _ in uplink.beats]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_cab_heartbeat_worker_follows_heartbeat_interval(make_gate) -> None:
    from edge_agent.cab.agent import Agent

    parts = make_gate(server={"heartbeat_interval_s": 7.0, "sync_interval_s": 300.0})
    clock = FakeClock()
    uplink = RecordingUplink(clock)
    agent = Agent(parts.config, parts, uplink)  # type: ignore[arg-type]
    workers = dict(agent.workers())
    assert {"gate-loop", "gallery-sync", "heartbeat", "outbox-delivery"} <= set(workers)
    stop = ClockedStop(clock, BEATS)
    workers["heartbeat"](parts.config, stop)
    assert len(uplink.beats) == BEATS
    assert stop.timeouts == [7.0] * BEATS
    assert _spacing(uplink) == [7.0] * (BEATS - 1)
    beat = uplink.beats[-1][1]
    assert beat.device_id == parts.config.device.id and beat.state == GateState.LOCKED.value
    assert beat.gallery_version == parts.cache.gallery.version
    assert uplink.other_calls == []


def test_cab_gallery_sync_sends_no_heartbeat_and_keeps_its_own_interval(make_gate) -> None:
    from edge_agent.cab.agent import Agent

    parts = make_gate(server={"heartbeat_interval_s": 7.0, "sync_interval_s": 300.0})
    clock = FakeClock()
    uplink = RecordingUplink(clock)
    agent = Agent(parts.config, parts, uplink)  # type: ignore[arg-type]
    stop = ClockedStop(clock, 2)
    dict(agent.workers())["gallery-sync"](parts.config, stop)
    assert uplink.beats == []
    assert stop.timeouts == [300.0, 300.0]
    assert uplink.other_calls == ["get_config", "get_config"]


def test_station_heartbeat_worker_follows_heartbeat_interval(tmp_path: Path) -> None:
    from edge_agent.station.agent import StationAgent
    from edge_agent.station.pipeline import StationInputs
    from edge_agent.station.scale import ScaleSet
    from edge_agent.station.sim import registry as reg
    from edge_agent.station.sim.connected import sim_agent_config
    from edge_agent.station.sim.scenario import make_layout, station_config
    from edge_agent.station.sim.station import SimScale, SimScaleBank

    layout = make_layout(1, 1)
    station = station_config(layout, reg.STATION_ID).model_dump(mode="json")
    station["registry_path"] = str(tmp_path / "reg.json")
    config = sim_agent_config("http://127.0.0.1:9", "ST-1", "k" * 64, "", tmp_path, station)
    config = config.model_copy(
        update={"server": config.server.model_copy(update={"heartbeat_interval_s": 11.0})}
    )
    scale_id = layout.cells[0].scale_id
    inputs = StationInputs(
        cameras={},
        scales=ScaleSet({scale_id: SimScale(SimScaleBank([scale_id]), scale_id)}),
        scanners={},
    )
    clock = FakeClock()
    uplink = RecordingUplink(clock, fail_first=1)  # a lost beat does not stop the next ones
    agent = StationAgent(config, inputs, uplink)  # type: ignore[arg-type]
    try:
        stop = ClockedStop(clock, BEATS)
        dict(agent.workers())["heartbeat"](config, stop)
    finally:
        agent.outbox.close()
    assert len(uplink.beats) == BEATS
    assert stop.timeouts == [11.0] * BEATS
    assert _spacing(uplink) == [11.0] * (BEATS - 1)
    assert {b.state for _, b in uplink.beats} == {"never_synced"}  # no key: nothing verifies


def test_heartbeat_worker_survives_a_failing_beat() -> None:
    from edge_agent.config import AgentConfigBase

    config = AgentConfigBase.model_validate(
        {
            "device": {"id": "D1", "kind": "forklift", "site_id": "s"},
            "server": {"url": "http://127.0.0.1:9", "device_key": "k", "heartbeat_interval_s": 5},
        }
    )
    clock = FakeClock()
    uplink = RecordingUplink(clock)
    calls = 0

    def beat() -> Heartbeat:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("state not readable yet")
        return Heartbeat(
            device_id="D1", sent_at=datetime.now(UTC), agent_version="t", state="locked"
        )

    stop = ClockedStop(clock, 3)
    run_heartbeat(config, stop, uplink, beat)
    assert calls == 3 and len(uplink.beats) == 2
    assert [t for t, _ in uplink.beats] == [5.0, 10.0]
