"""Scenarios against a real server: synced registry in, events out through the agent's outbox.

    rendered frames -> zones -> rules -> OutboxSink (SQLite) -> deliver_once -> server

Flagged events carry their frame, stored in the outbox's evidence index and uploaded first.

The same path the running agent uses (`StationAgent`), driven tick by tick for determinism.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from contract.messages import StationRegistry
from edge_agent.config import StationAgentConfig
from edge_agent.delivery import deliver_once
from edge_agent.outbox import Outbox
from edge_agent.station.agent import OutboxSink, build_registry
from edge_agent.station.evidence import EvidenceRecorder
from edge_agent.station.sim.runner import ScenarioResult, run_scenario
from edge_agent.station.sim.scenario import Scenario, SimLayout
from edge_agent.station.sync import RegistrySyncError, StationUplink, sync_registry
from edge_agent.uplink import UplinkError

logger = logging.getLogger(__name__)


@dataclass
class ConnectedRun:
    """What one scenario against the server produced."""

    result: ScenarioResult
    registry: StationRegistry | None
    sync_error: str | None
    delivered: int
    undelivered: int


def sim_agent_config(
    server_url: str,
    device_id: str,
    device_key: str,
    public_key: str,
    store_dir: Path,
    station: dict[str, object],
    site_id: str = "site-1",
) -> StationAgentConfig:
    """An agent config for a simulated station (sim scales and scanners, no real camera)."""
    return StationAgentConfig.model_validate(
        {
            "device": {"id": device_id, "kind": "filling_station", "site_id": site_id},
            "server": {
                "url": server_url,
                "device_key": device_key,
                "public_key": public_key,
                "timeout_s": 30.0,
            },
            "store": {"dir": str(store_dir), "retry_initial_s": 0.1, "retry_max_s": 2.0},
            "station": station,
        }
    )


def sync_now(
    config: StationAgentConfig, uplink: StationUplink
) -> tuple[StationRegistry | None, str | None]:
    """One registry sync; (message, None) or (None, why it failed)."""
    registry = build_registry(config)
    try:
        return sync_registry(registry, uplink), None
    except (UplinkError, RegistrySyncError) as err:
        logger.error("station registry sync failed: %s", err)
        return None, str(err)


def deliver_all(
    config: StationAgentConfig, outbox: Outbox, uplink: StationUplink, rounds: int
) -> int:
    """Deliver until the outbox is empty or `rounds` passes failed; how many were acknowledged."""
    acked = 0
    for _ in range(rounds):
        if outbox.depth() == 0:
            break
        sent = deliver_once(config, outbox, uplink)
        acked += sent
        if not sent:
            time.sleep(config.store.retry_initial_s)
    return acked


def play_against_server(
    config: StationAgentConfig,
    layout: SimLayout,
    scenario: Scenario,
    uplink: StationUplink,
    *,
    start: datetime | None = None,
    delivery_rounds: int = 20,
) -> ConnectedRun:
    """Sync the registry, play the scenario through the real vision and rules, deliver."""
    message, problem = sync_now(config, uplink)
    # A fresh object loads the signed cache the sync just wrote (or stays empty: fail closed).
    registry = build_registry(config)
    outbox = Outbox(config.store.dir / "outbox.sqlite")
    try:
        result = run_scenario(
            config.station,
            layout,
            scenario,
            registry,
            OutboxSink(outbox),
            device_id=config.device.id,
            start=start or datetime.now(UTC),
            tz=config.device.zone(),
            evidence=EvidenceRecorder(config.station, outbox, config.store.evidence_dir),
        )
        delivered = deliver_all(config, outbox, uplink, delivery_rounds)
        left = outbox.depth()
    finally:
        outbox.close()
    if left:
        logger.warning("%d station event(s) still in the outbox", left)
    return ConnectedRun(result, message, problem, delivered, left)
