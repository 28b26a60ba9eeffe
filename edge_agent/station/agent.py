"""Wiring of the filling-station agent: station pipeline + the shared outbox, delivery, uplink.

Flagged events carry the camera frame of their scale (`station.evidence`), stored through the
same outbox evidence index as the cab's face frames and uploaded by the same delivery worker.

Workers (threads, each `(config, stop_event)`): the pipeline's camera/scales/scanner/rules
workers, outbox-delivery and heartbeat (the shared `edge_agent.delivery` and
`edge_agent.heartbeat` workers), registry-sync, and station-status, which writes
`<store>/station_status.json` so the local indication survives a dead log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from contract.auth import SignatureError, load_public_key_b64
from contract.messages import Event, Heartbeat
from edge_agent.config import StationAgentConfig
from edge_agent.delivery import run_delivery
from edge_agent.heartbeat import run_heartbeat
from edge_agent.outbox import Outbox
from edge_agent.station.config import VisionConfig
from edge_agent.station.events import StationEvent
from edge_agent.station.evidence import EvidenceRecorder
from edge_agent.station.pipeline import StationInputs, StationPipeline
from edge_agent.station.sync import StationUplink, SyncedRegistry, run_registry_sync
from edge_agent.station.vision import PersonDetector
from edge_agent.version import AGENT_VERSION

logger = logging.getLogger(__name__)

STATUS_FILE = "station_status.json"


class OutboxSink:
    """`EventSink` on the agent's SQLite outbox: the outbox assigns the per-device sequence."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def put(self, event: StationEvent) -> None:
        """Commit the event (renumbered with the outbox's next seq) before returning."""

        def build(seq: int) -> Event:
            renumbered: StationEvent = event.model_copy(update={"seq": seq})
            return renumbered

        self._outbox.append(build)


def build_registry(config: StationAgentConfig) -> SyncedRegistry:
    """The synced registry, with the signed cache loaded when it still verifies."""
    station = config.station
    key = None
    if config.server.public_key:
        try:
            key = load_public_key_b64(config.server.public_key)
        except SignatureError as err:
            logger.error("server.public_key: %s", err)
    if key is None:
        logger.error("no usable server.public_key: no registry verifies, every scan is refused")
    registry = SyncedRegistry(
        config.device.id,
        station.station_id,
        key,
        station.registry_path,
        station.rules.required_certificate,
    )
    registry.load_cache()
    return registry


def _person_check(vision: VisionConfig) -> PersonDetector | None:
    """The pose person check when the config asks for it (occupancy needs no model).

    A missing or broken model raises here and the agent does not start (fail closed) rather
    than running without its person check.
    """
    if vision.person_method != "pose":
        return None
    from edge_agent.station.person import load_person_detector  # onnxruntime only when used

    return load_person_detector(vision)


class StationAgent:
    """The running filling-station agent."""

    def __init__(
        self,
        config: StationAgentConfig,
        inputs: StationInputs,
        uplink: StationUplink | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.station = config.station
        self.uplink = uplink
        self.clock = clock
        self.stop_event = threading.Event()
        self.outbox = Outbox(config.store.dir / "outbox.sqlite")  # damaged: quarantined
        self.outbox.report_notices(config.device.id)
        self.registry = build_registry(config)
        self.evidence = EvidenceRecorder(self.station, self.outbox, config.store.evidence_dir)
        self.pipeline = StationPipeline(
            self.station,
            inputs,
            self.registry,
            OutboxSink(self.outbox),
            config.device.id,
            clock,
            tz=config.device.zone(),
            evidence=self.evidence,
            person_detector=_person_check(self.station.vision),
        )
        self.status_path = config.store.dir / STATUS_FILE
        self.last_sync_error: str | None = None
        self._last_indication = ""
        self.threads: list[threading.Thread] = []
        self._started = time.monotonic()

    # --- local indication ------------------------------------------------------------------

    def registry_state(self) -> str:
        """ok, stale or never_synced (the last two refuse every scan)."""
        synced = self.registry.synced_at()
        if synced is None:
            return "never_synced"
        age = datetime.fromtimestamp(self.clock(), UTC) - synced
        if age > timedelta(hours=self.station.rules.registry_max_age_h):
            return "stale"
        return "ok"

    def status(self) -> dict[str, Any]:
        """What station_status.json holds."""
        state = self.registry_state()
        synced = self.registry.synced_at()
        indication = (
            "ready"
            if state == "ok"
            else f"registry {state.replace('_', ' ')}: every scan refused, fill-enable off"
        )
        counters = self.pipeline.rules.counters
        return {
            "device_id": self.config.device.id,
            "station_id": self.station.station_id,
            "indication": indication,
            "registry_state": state,
            "registry_synced_at": synced.isoformat() if synced else None,
            "last_sync_error": self.last_sync_error,
            "outbox_depth": self.outbox.depth(),
            "scans_accepted": counters.scans_accepted,
            "scans_rejected": counters.scans_rejected,
            "scans_refused_stale_registry": counters.scans_refused_stale_registry,
            "faults": dict(self.pipeline.faults + self.evidence.faults),
            "dropped": dict(self.pipeline.dropped),
        }

    def write_status(self) -> dict[str, Any]:
        """Write the status file atomically; log each change of indication once."""
        doc = self.status()
        if doc["indication"] != self._last_indication:
            level = logging.INFO if doc["registry_state"] == "ok" else logging.ERROR
            logger.log(level, "station %s: %s", self.station.station_id, doc["indication"])
            self._last_indication = doc["indication"]
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(self.status_path)
        return doc

    def _on_sync(self, problem: str | None) -> None:
        self.last_sync_error = problem
        self.write_status()

    # --- workers ---------------------------------------------------------------------------

    def _status_worker(self, config: StationAgentConfig, stop_event: threading.Event) -> None:
        while not stop_event.is_set():
            try:
                self.write_status()
            except OSError:
                logger.exception("station status not written")
            stop_event.wait(self.station.status_interval_s)

    def heartbeat(self) -> Heartbeat:
        """What the heartbeat worker sends; state is ready, stale or never_synced."""
        state = self.registry_state()
        return Heartbeat(
            device_id=self.config.device.id,
            sent_at=datetime.now(UTC),
            agent_version=AGENT_VERSION,
            state="ready" if state == "ok" else state,
            outbox_depth=self.outbox.depth(),
            uptime_s=time.monotonic() - self._started,
        )

    def workers(self) -> list[tuple[str, Callable[[StationAgentConfig, threading.Event], None]]]:
        """The agent-level workers (the pipeline starts its own)."""
        named: list[tuple[str, Callable[[StationAgentConfig, threading.Event], None]]] = [
            ("station-status", self._status_worker)
        ]
        if self.uplink is not None:
            uplink = self.uplink
            named.append(("outbox-delivery", partial(_delivery, outbox=self.outbox, uplink=uplink)))
            named.append(("heartbeat", partial(run_heartbeat, uplink=uplink, beat=self.heartbeat)))
            named.append(
                (
                    "registry-sync",
                    partial(_sync, registry=self.registry, uplink=uplink, on_result=self._on_sync),
                )
            )
        return named

    def start(self) -> None:
        """Start the pipeline and the agent workers."""
        self.threads = self.pipeline.start(self.stop_event)
        for name, worker in self.workers():
            thread = threading.Thread(
                target=worker, args=(self.config, self.stop_event), name=name, daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every worker, drive fill-enables off, close the devices and the outbox."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)
        self.pipeline.close()
        self.write_status()
        self.outbox.close()
        if self.uplink is not None:
            self.uplink.close()


def _delivery(
    config: StationAgentConfig, stop_event: threading.Event, outbox: Outbox, uplink: StationUplink
) -> None:
    run_delivery(config, stop_event, outbox, uplink)


def _sync(
    config: StationAgentConfig,
    stop_event: threading.Event,
    registry: SyncedRegistry,
    uplink: StationUplink,
    on_result: Callable[[str | None], None],
) -> None:
    run_registry_sync(config.server.sync_interval_s, stop_event, registry, uplink, on_result)


def make_uplink(config: StationAgentConfig) -> StationUplink:
    """The HMAC-signed uplink (the key is the issued key text's ASCII bytes)."""
    return StationUplink(
        config.server.url,
        config.device.id,
        config.server.device_key.get_secret_value().encode("ascii"),
        config.server.timeout_s,
    )


def run_station(config: StationAgentConfig, stop: threading.Event, wedge_stream: Any = None) -> int:
    """Open the real devices, run until `stop` is set, shut down; the exit code."""
    from edge_agent.station.pipeline import build_inputs

    station = config.station
    try:
        inputs = build_inputs(station, wedge_stream)
    except Exception as err:  # any device that cannot be opened: refuse to run, say which
        logger.error("station devices could not be opened: %s", err)
        return 3
    agent = StationAgent(config, inputs, make_uplink(config))
    agent.start()
    logger.info(
        "station agent %s (%s) running; status in %s",
        config.device.id,
        station.station_id,
        Path(agent.status_path),
    )
    stop.wait()
    agent.stop()
    return 0
