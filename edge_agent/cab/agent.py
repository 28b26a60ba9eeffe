"""Wiring of the cab agent: build the gate from config, then run the named workers.

Workers (threads, each `(config, stop_event)`): camera-capture, gate-loop, outbox-delivery,
gallery-sync, heartbeat; the watchdog runs in its own process so that it outlives the agent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path

from contract.auth import SignatureError, load_public_key_b64
from contract.codes import ClaimKind, GateState, ReasonCode
from contract.messages import ClaimInfo, GalleryUpdateRequired, Heartbeat
from edge_agent.cab.cache import GalleryCache
from edge_agent.cab.claims import QueueCardReader, claim_info
from edge_agent.cab.gate import FrameAnalyzer, Verifier, resolve_policy
from edge_agent.cab.inputs import Inputs, ModbusInputs, run_inputs
from edge_agent.cab.interlock import Heartbeat as LifeSign
from edge_agent.cab.interlock import Interlock, build_interlock, run_watchdog
from edge_agent.cab.liveness import build_liveness
from edge_agent.cab.machine import CabGate, ClockGuard
from edge_agent.cab.status import StatusServer
from edge_agent.cab.types import GateFault
from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink, UplinkError
from models.errors import ModelError
from models.manifest import CalibrationBlock

logger = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"


@dataclass
class GateParts:
    """Everything the gate needs, built from one config."""

    config: AgentConfig
    gate: CabGate
    outbox: Outbox
    interlock: Interlock
    cache: GalleryCache
    engine: object | None
    calibration_fault: GateFault | None = None

    def close(self) -> None:
        """Release the store and the outputs (outputs are not changed)."""
        self.outbox.close()
        self.interlock.close()


def build_gate(
    config: AgentConfig,
    engine: object | None = None,
    calibrations: CalibrationBlock | None = None,
    interlock: Interlock | None = None,
) -> GateParts:
    """Build the gate; model, calibration and gallery problems become fail-closed faults."""
    store = config.store.dir
    outbox = Outbox(store / "outbox.sqlite")
    interlock = interlock or build_interlock(config.interlock, store)
    model_fault: GateFault | None = None
    calibration_fault: GateFault | None = None
    verifier: Verifier | None = None
    contract_id = ""
    try:
        if engine is None:
            from models.engine import FaceEngine

            engine = FaceEngine(
                config.models.dir / config.models.pack, threads=config.models.threads
            )
        from models.engine import FaceEngine as _Engine

        if not isinstance(engine, _Engine):
            raise ModelError(f"not a FaceEngine: {type(engine).__name__}")
        contract_id = engine.contract_id
        block = calibrations if calibrations is not None else engine.calibration
        try:
            policy = resolve_policy(config.gate, config.models, block, contract_id)
        except GateFault as fault:
            calibration_fault = fault
            raise
        analyzer = FrameAnalyzer(engine, config.quality)
        verifier = Verifier(
            analyzer,
            config.gate,
            config.claims,
            policy,
            poll_s=config.interlock.heartbeat_s,
            liveness=build_liveness(config.liveness, engine),
        )
        logger.info(
            "threshold %.4f from %s %r", policy.threshold, policy.source, policy.calibration
        )
    except GateFault as fault:
        model_fault = fault
    except (ModelError, OSError, KeyError, ValueError) as err:
        model_fault = GateFault(ReasonCode.MODEL_MISSING, f"model pack unusable: {err}")
    if model_fault is not None:
        logger.error("gate stays closed: %s", model_fault)
    public_key = None
    if config.server.public_key:
        try:
            public_key = load_public_key_b64(config.server.public_key)
        except SignatureError as err:
            logger.error("server.public_key: %s", err)
    cache = GalleryCache(store, config.device.id, contract_id, public_key)
    gate = CabGate(
        config,
        verifier,
        cache,
        outbox,
        interlock,
        ClockGuard(config),
        contract_id,
        model_fault,
        str(store / "evidence"),
    )
    if model_fault is not None:
        gate.record_fault("model", model_fault.reason, model_fault.detail)
    try:
        cache.load()
    except GateFault as fault:
        logger.error("local gallery rejected: %s", fault.detail)
        cache.gallery = None
        gate.record_fault("gallery", fault.reason, fault.detail)
    return GateParts(config, gate, outbox, interlock, cache, engine, calibration_fault)


def sync_once(gate: CabGate, uplink: Uplink) -> None:
    """Fetch config and gallery (snapshot or delta); each must verify before it is used."""
    cache = gate.cache
    try:
        envelope = uplink.get_config()
    finally:
        # Even a refused request (e.g. 401 for a timestamp out of range) tells the server's time.
        if uplink.last_server_time is not None:
            gate.clock.observe_server(uplink.last_server_time)
    cache.install_config(envelope)
    # Too many stored deltas: ask for a fresh snapshot so the signed chain stays short.
    compact = cache.delta_count() >= gate.config.store.max_gallery_deltas
    since = cache.gallery.version if cache.gallery and not compact else 0
    answer = uplink.get_gallery(since, cache.contract_id)
    if isinstance(answer, GalleryUpdateRequired):
        raise GateFault(
            ReasonCode.GALLERY_INVALID, f"server needs another model pack: {answer.detail}"
        )
    if answer.payload_type == "gallery.snapshot":
        cache.install_snapshot(answer)
    else:
        cache.apply_delta(answer)


class Agent:
    """The running cab agent."""

    def __init__(self, config: AgentConfig, parts: GateParts, uplink: Uplink | None) -> None:
        from edge_agent.cab.sources import CaptureWorker, QueueFeed

        self.config = config
        self.parts = parts
        self.gate = parts.gate
        self.uplink = uplink
        self.stop_event = threading.Event()
        self.inputs = Inputs()
        self.card_reader = QueueCardReader()
        self.capture = CaptureWorker(config.camera, self.stop_event)
        self.feed = QueueFeed(self.capture)
        self.started = time.monotonic()
        self.life = LifeSign(config.store.dir / "heartbeat")
        if self.gate.verifier is not None:
            self.gate.verifier.on_progress = self.life.beat
        self.threads: list[threading.Thread] = []
        self.watchdog: BaseProcess | None = None
        self.status_server: StatusServer | None = None
        self._camera_lost = False
        self._sync_fault: str | None = None

    def present_claim(self, kind: ClaimKind, value: str) -> ClaimInfo:
        """A claim from the QR scanner, the card reader or the keypad."""
        info = claim_info(kind, value, self.config.claims.cert_qr_pattern)
        self.inputs.claim, self.inputs.claim_at = info, time.monotonic()
        return info

    def _take_claim(self) -> ClaimInfo | None:
        """The pending claim if still fresh; it is used once."""
        claim, self.inputs.claim = self.inputs.claim, None
        if (
            claim is not None
            and time.monotonic() - self.inputs.claim_at > self.config.claims.claim_valid_s
        ):
            logger.info("claim %s expired unused", claim.kind.value)
            return None
        return claim

    def _watch_camera(self) -> None:
        """A device.fault event when the camera is lost and when it comes back."""
        lost = self.capture.lost()
        if lost == self._camera_lost:
            return
        self._camera_lost = lost
        source = self.config.camera.source
        if lost:
            message = f"no frame from {source!r} for {self.config.camera.lost_after_s} s"
            logger.error("camera lost: %s", message)
            if self.gate.status.state == GateState.LOCKED:
                self.gate.status.indication = "camera lost: start refused"
        else:
            message = f"frames from {source!r} again"
            logger.info("camera recovered")
            if self.gate.status.state == GateState.LOCKED:
                self.gate.status.indication = "locked"
        self.gate.record_fault("camera", ReasonCode.CAMERA_LOST, message, recovered=not lost)

    def _presence(self, not_before: float) -> bool:
        """start_trigger=presence: a face in the latest frame counts as a start request."""
        if (
            self.config.gate.start_trigger != "presence"
            or self.gate.status.state != GateState.LOCKED
            or self.gate.verifier is None
            or time.monotonic() < not_before
        ):
            return False
        try:
            frame = self.feed.next_frame(timeout_s=0.0)
        except GateFault:
            return False
        return frame is not None and bool(self.gate.verifier.analyzer.engine.detect(frame.image))

    def _gate_loop(self) -> None:
        """Named worker 'gate-loop': serve start requests, engine state, re-verification."""
        next_reverify = 0.0
        next_presence = 0.0
        was_running = False
        while not self.stop_event.is_set():
            self.life.beat()
            try:
                next_reverify, next_presence, was_running = self._gate_step(
                    next_reverify, next_presence, was_running
                )
            except Exception:
                # The gate itself stays closed on errors; the loop must keep beating.
                logger.exception("gate loop step failed")
            self.stop_event.wait(self.config.interlock.heartbeat_s / 2)

    def _gate_step(
        self, next_reverify: float, next_presence: float, was_running: bool
    ) -> tuple[float, float, bool]:
        """One pass of the gate loop; returns the loop's timers and engine state."""
        self._watch_camera()
        if self._presence(next_presence):
            self.inputs.start_requested.set()
            next_presence = time.monotonic() + self.config.gate.presence_retry_s
        card = self.card_reader.read(timeout_s=0.0)
        if card:
            self.present_claim(ClaimKind.IC_CARD, card)
        if self.inputs.override_code:
            code, self.inputs.override_code = self.inputs.override_code, None
            self.gate.override(code, "local override")
        if self.inputs.start_requested.is_set():
            self.inputs.start_requested.clear()
            self.feed.drain()
            self.gate.request_start(self.feed, self._take_claim())
        running = self.inputs.engine_running
        if running and not was_running:
            self.gate.engine_started()
            next_reverify = time.monotonic() + self.config.gate.reverify_interval_s
        elif was_running and not running:
            self.gate.engine_stopped()
        was_running = running
        if running and time.monotonic() >= next_reverify:
            self.gate.reverify(self.feed)
            next_reverify = time.monotonic() + self.config.gate.reverify_interval_s
        self.gate.tick()
        return next_reverify, next_presence, was_running

    def _sync_loop(self) -> None:
        """Named worker 'gallery-sync': config, gallery and heartbeat to the server."""
        assert self.uplink is not None
        while not self.stop_event.is_set():
            try:
                sync_once(self.gate, self.uplink)
                gallery = self.gate.cache.gallery
                self.uplink.heartbeat(
                    Heartbeat(
                        device_id=self.config.device.id,
                        sent_at=datetime.now(UTC),
                        agent_version=AGENT_VERSION,
                        state=self.gate.status.state.value,
                        pack_contract_id=self.gate.pack_contract_id,
                        gallery_version=gallery.version if gallery else 0,
                        outbox_depth=self.parts.outbox.depth(),
                        uptime_s=time.monotonic() - self.started,
                    )
                )
                self._sync_fault = None
            except GateFault as fault:
                # A refused gallery or config is worth a supervisor's look, once per cause.
                logger.error("sync refused: %s", fault)
                if fault.detail != self._sync_fault:
                    self._sync_fault = fault.detail
                    self.gate.record_fault("gallery", fault.reason, fault.detail)
            except UplinkError as err:
                logger.warning("sync: %s", err)
            except Exception:
                logger.exception("sync loop error")
            self.stop_event.wait(self.config.server.sync_interval_s)

    def start(self) -> None:
        """Start the watchdog process and the worker threads."""
        from edge_agent.delivery import run_delivery

        self.life.beat()
        self.watchdog = start_watchdog(self.config, self.life.path)
        self.capture.start()
        self.status_server = StatusServer(self, self.config.status.host, self.config.status.port)
        self.status_server.thread.start()
        logger.info("status endpoint at %s", self.status_server.url)
        workers = [("gate-loop", self._gate_loop)]
        if self.config.inputs.source == "modbus":
            reader = ModbusInputs(self.config.inputs)
            workers.append(
                (
                    "inputs-poll",
                    lambda: run_inputs(self.config.inputs, self.stop_event, reader, self.inputs),
                )
            )
        if self.uplink is not None:
            uplink = self.uplink
            workers.append(("gallery-sync", self._sync_loop))
            workers.append(
                (
                    "outbox-delivery",
                    lambda: run_delivery(self.config, self.stop_event, self.parts.outbox, uplink),
                )
            )
        for name, target in workers:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; enable is opened on the way out."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=5.0)
        if self.status_server is not None:
            self.status_server.shutdown()
            self.status_server.server_close()
        self.gate.shutdown()
        if self.watchdog is not None:
            self.watchdog.terminate()
            self.watchdog.join(timeout=5.0)
        self.parts.close()
        if self.uplink is not None:
            self.uplink.close()


def start_watchdog(config: AgentConfig, heartbeat_path: Path) -> BaseProcess:
    """Start the watchdog in its own process (it must outlive a killed or hung agent)."""
    process = multiprocessing.get_context("spawn").Process(
        target=watchdog_main,
        args=(config, str(heartbeat_path), os.getpid()),
        name="interlock-watchdog",
        daemon=True,
    )
    process.start()
    return process


def watchdog_main(config: AgentConfig, heartbeat_path: str, parent_pid: int) -> None:
    """Entry point of the watchdog process: its own driver instance, its own loop."""
    logging.basicConfig(level=logging.INFO)
    interlock = build_interlock(config.interlock, config.store.dir)
    stop = threading.Event()
    try:
        run_watchdog(config.interlock, LifeSign(Path(heartbeat_path)), interlock, stop, parent_pid)
    finally:
        interlock.close()
