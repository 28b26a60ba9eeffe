"""Wiring of the cab agent: build the gate from config, then run the named workers.

Named workers (threads, each `(config, stop_event)` plus its collaborators): gate-loop,
inputs-poll (modbus inputs only), gallery-sync, heartbeat and outbox-delivery (with an uplink;
the last two are the shared `edge_agent.heartbeat` / `edge_agent.delivery` workers). Camera
capture and the status endpoint run their own threads; the interlock watchdog runs in its own
process so that it outlives the agent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
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
from edge_agent.cab.sources import CaptureWorker, QueueFeed
from edge_agent.cab.status import AgentSnapshot, StatusServer
from edge_agent.cab.types import GateFault
from edge_agent.config import CabAgentConfig
from edge_agent.delivery import run_delivery
from edge_agent.heartbeat import run_heartbeat
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink, UplinkError
from edge_agent.version import AGENT_VERSION
from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import CalibrationBlock

logger = logging.getLogger(__name__)


@dataclass
class GateParts:
    """Everything the gate needs, built from one config."""

    config: CabAgentConfig
    gate: CabGate
    outbox: Outbox
    interlock: Interlock
    cache: GalleryCache
    engine: FaceEngine | None
    calibration_fault: GateFault | None = None

    def close(self) -> None:
        """Release the store and the outputs (outputs are not changed)."""
        self.outbox.close()
        self.interlock.close()


def build_gate(
    config: CabAgentConfig,
    engine: FaceEngine | None = None,
    calibrations: CalibrationBlock | None = None,
    interlock: Interlock | None = None,
) -> GateParts:
    """Build the gate; model, calibration and gallery problems become fail-closed faults."""
    store = config.store.dir
    outbox = Outbox(store / "outbox.sqlite")  # a damaged file is quarantined, not fatal
    outbox.report_notices(config.device.id)
    interlock = interlock or build_interlock(config.interlock, store)
    model_fault: GateFault | None = None
    calibration_fault: GateFault | None = None
    verifier: Verifier | None = None
    contract_id = ""
    try:
        if engine is None:
            engine = FaceEngine(
                config.models.dir / config.models.pack, threads=config.models.threads
            )
        contract_id = engine.contract_id
        block = calibrations if calibrations is not None else engine.calibration
        try:
            policy = resolve_policy(config.gate, config.models, block, contract_id, engine.cohort)
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
        str(config.store.evidence_dir),
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


class GateLoop:
    """The gate-loop worker's collaborators and timers; `step()` is one pass."""

    def __init__(
        self,
        config: CabAgentConfig,
        gate: CabGate,
        capture: CaptureWorker,
        feed: QueueFeed,
        inputs: Inputs,
        card_reader: QueueCardReader,
        life: LifeSign,
    ) -> None:
        self.config = config
        self.gate = gate
        self.capture = capture
        self.feed = feed
        self.inputs = inputs
        self.card_reader = card_reader
        self.life = life
        self.next_reverify = 0.0
        self.next_presence = 0.0
        self.was_running = False
        self.camera_lost = False

    def watch_camera(self) -> None:
        """A device.fault event when the camera is lost and when it comes back."""
        lost = self.capture.lost()
        if lost == self.camera_lost:
            return
        self.camera_lost = lost
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

    def presence(self) -> bool:
        """start_trigger=presence: a face in the latest frame counts as a start request."""
        if (
            self.config.gate.start_trigger != "presence"
            or self.gate.status.state != GateState.LOCKED
            or self.gate.verifier is None
            or time.monotonic() < self.next_presence
        ):
            return False
        try:
            frame = self.feed.next_frame(timeout_s=0.0)
        except GateFault:
            return False
        return frame is not None and bool(self.gate.verifier.analyzer.engine.detect(frame.image))

    def step(self) -> None:
        """One pass: camera state, start requests, claims, override, engine, re-verification."""
        self.watch_camera()
        if self.presence():
            self.inputs.start_requested.set()
            self.next_presence = time.monotonic() + self.config.gate.presence_retry_s
        card = self.card_reader.read(timeout_s=0.0)
        if card:
            self.inputs.present(
                claim_info(ClaimKind.IC_CARD, card, self.config.claims.cert_qr_pattern)
            )
        if self.inputs.override_code:
            code, self.inputs.override_code = self.inputs.override_code, None
            self.gate.override(code, "local override")
        if self.inputs.start_requested.is_set():
            self.inputs.start_requested.clear()
            self.feed.drain()
            self.gate.request_start(
                self.feed, self.inputs.take_claim(self.config.claims.claim_valid_s)
            )
        running = self.inputs.engine_running
        if running and not self.was_running:
            self.gate.engine_started()
            self.next_reverify = time.monotonic() + self.config.gate.reverify_interval_s
        elif self.was_running and not running:
            self.gate.engine_stopped()
        self.was_running = running
        if running and time.monotonic() >= self.next_reverify:
            self.gate.reverify(self.feed)
            self.next_reverify = time.monotonic() + self.config.gate.reverify_interval_s
        self.gate.tick()


def run_gate_loop(config: CabAgentConfig, stop_event: threading.Event, loop: GateLoop) -> None:
    """Named worker 'gate-loop': serve start requests, engine state, re-verification."""
    while not stop_event.is_set():
        loop.life.beat()
        try:
            loop.step()
        except Exception:
            # The gate itself stays closed on errors; the loop must keep beating.
            logger.exception("gate loop step failed")
        stop_event.wait(config.interlock.heartbeat_s / 2)


def run_gallery_sync(
    config: CabAgentConfig, stop_event: threading.Event, gate: CabGate, uplink: Uplink
) -> None:
    """Named worker 'gallery-sync': signed config and gallery every sync_interval_s."""
    last_fault: str | None = None
    while not stop_event.is_set():
        try:
            sync_once(gate, uplink)
            last_fault = None
        except GateFault as fault:
            # A refused gallery or config is worth a supervisor's look, once per cause.
            logger.error("sync refused: %s", fault)
            if fault.detail != last_fault:
                last_fault = fault.detail
                gate.record_fault("gallery", fault.reason, fault.detail)
        except UplinkError as err:
            logger.warning("sync: %s", err)
        except Exception:
            logger.exception("sync loop error")
        stop_event.wait(config.server.sync_interval_s)


def run_inputs_poll(
    config: CabAgentConfig, stop_event: threading.Event, reader: ModbusInputs, inputs: Inputs
) -> None:
    """Named worker 'inputs-poll': the Modbus start and engine inputs."""
    run_inputs(config.inputs, stop_event, reader, inputs)


def passive_pad(gate: CabGate) -> str | None:
    """The passive PAD component the gate's liveness uses (None without a model or verifier)."""
    return gate.verifier.liveness.passive_pad if gate.verifier is not None else None


def cab_heartbeat(
    config: CabAgentConfig, gate: CabGate, outbox: Outbox, started: float
) -> Heartbeat:
    """What the cab's heartbeat worker sends (`started`: monotonic start time)."""
    gallery = gate.cache.gallery
    return Heartbeat(
        device_id=config.device.id,
        sent_at=datetime.now(UTC),
        agent_version=AGENT_VERSION,
        state=gate.status.state.value,
        pack_contract_id=gate.pack_contract_id,
        gallery_version=gallery.version if gallery else 0,
        outbox_depth=outbox.depth(),
        uptime_s=time.monotonic() - started,
        passive_pad=passive_pad(gate),
    )


CabWorker = Callable[[CabAgentConfig, threading.Event], None]


class Agent:
    """The running cab agent: its collaborators, the named workers and the watchdog process."""

    def __init__(self, config: CabAgentConfig, parts: GateParts, uplink: Uplink | None) -> None:
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
        self.loop = GateLoop(
            config, self.gate, self.capture, self.feed, self.inputs, self.card_reader, self.life
        )
        self.threads: list[threading.Thread] = []
        self.watchdog: BaseProcess | None = None
        self.status_server: StatusServer | None = None

    def present_claim(self, kind: ClaimKind, value: str) -> ClaimInfo:
        """A claim from the QR scanner, the card reader or the keypad."""
        info = claim_info(kind, value, self.config.claims.cert_qr_pattern)
        self.inputs.present(info)
        return info

    def snapshot(self) -> AgentSnapshot:
        """The figures the status endpoint reports, copied now."""
        status = self.gate.status
        gallery = self.gate.cache.gallery
        return AgentSnapshot(
            device_id=self.config.device.id,
            state=status.state,
            enable=status.enable,
            alarm=status.alarm,
            indication=status.indication,
            operator_id=status.operator_id,
            last_decision=status.last_decision,
            last_decision_at=status.last_decision_at,
            prompt=self._prompt(),
            camera_lost=self.capture.lost(),
            model_fault=self.gate.model_fault.detail if self.gate.model_fault else None,
            passive_pad=passive_pad(self.gate),
            gallery_version=gallery.version if gallery else None,
            outbox_depth=self.parts.outbox.depth(),
            frames_captured=self.capture.captured,
            frames_dropped=self.capture.dropped,
            camera_reconnects=self.capture.reconnects,
            decisions=dict(self.gate.decisions),
        )

    def _prompt(self) -> dict[str, str] | None:
        """The liveness challenge prompt on the cab screen now (language -> text), if any."""
        verifier = self.gate.verifier
        if verifier is None:
            return None
        current = getattr(verifier.liveness.display, "current", None)
        return dict(current) if current else None

    def workers(self) -> list[tuple[str, CabWorker]]:
        """The named `(config, stop_event)` workers (capture and status-http start their own)."""
        named: list[tuple[str, CabWorker]] = [("gate-loop", partial(run_gate_loop, loop=self.loop))]
        if self.config.inputs.source == "modbus":
            reader = ModbusInputs(self.config.inputs)
            named.append(
                ("inputs-poll", partial(run_inputs_poll, reader=reader, inputs=self.inputs))
            )
        if self.uplink is not None:
            uplink = self.uplink
            beat = partial(cab_heartbeat, self.config, self.gate, self.parts.outbox, self.started)
            named.append(("gallery-sync", partial(run_gallery_sync, gate=self.gate, uplink=uplink)))
            named.append(("heartbeat", partial(run_heartbeat, uplink=uplink, beat=beat)))
            named.append(
                ("outbox-delivery", partial(run_delivery, outbox=self.parts.outbox, uplink=uplink))
            )
        return named

    def start(self) -> None:
        """Start the watchdog process, capture, the status endpoint and the named workers."""
        self.life.beat()
        self.watchdog = start_watchdog(self.config, self.life.path)
        self.capture.start()
        self.status_server = StatusServer(self, self.config.status.host, self.config.status.port)
        self.status_server.thread.start()
        logger.info("status endpoint at %s", self.status_server.url)
        for name, worker in self.workers():
            thread = threading.Thread(
                target=worker, args=(self.config, self.stop_event), name=name, daemon=True
            )
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


def make_uplink(config: CabAgentConfig) -> Uplink:
    """The HMAC-signed uplink to the configured server."""
    return Uplink(
        config.server.url,
        config.device.id,
        config.server.device_key.get_secret_value().encode(),
        config.server.timeout_s,
    )


def run_cab(
    config: CabAgentConfig,
    stop_event: threading.Event,
    *,
    announce: Callable[[str], None] | None = None,
) -> int:
    """Build the gate, run until `stop_event` is set, shut down; the exit code (3: refused).

    `announce` receives the lines an operator starting the agent should see (the CLI echoes
    them); they are logged either way.
    """
    parts = build_gate(config)
    if parts.calibration_fault is not None:
        # The calibration cannot support the site's target FMR: refuse to run rather than
        # open a gate whose threshold nobody can vouch for.
        parts.close()
        logger.error("refusing to run: %s", parts.calibration_fault.detail)
        if announce is not None:
            announce(f"refusing to run: {parts.calibration_fault.detail}")
        return 3
    agent = Agent(config, parts, make_uplink(config))
    agent.start()
    url = agent.status_server.url if agent.status_server else "-"
    logger.info("cab agent %s running; status at %s", config.device.id, url)
    if announce is not None:
        announce(f"cab agent {config.device.id} running; status at {url}")
    stop_event.wait()
    agent.stop()
    return 0


def start_watchdog(config: CabAgentConfig, heartbeat_path: Path) -> BaseProcess:
    """Start the watchdog in its own process (it must outlive a killed or hung agent)."""
    process = multiprocessing.get_context("spawn").Process(
        target=watchdog_main,
        args=(config, str(heartbeat_path), os.getpid()),
        name="interlock-watchdog",
        daemon=True,
    )
    process.start()
    return process


def watchdog_main(config: CabAgentConfig, heartbeat_path: str, parent_pid: int) -> None:
    """Entry point of the watchdog process: its own driver instance, its own loop."""
    logging.basicConfig(level=logging.INFO)
    interlock = build_interlock(config.interlock, config.store.dir)
    stop = threading.Event()
    try:
        run_watchdog(config.interlock, LifeSign(Path(heartbeat_path)), interlock, stop, parent_pid)
    finally:
        interlock.close()
