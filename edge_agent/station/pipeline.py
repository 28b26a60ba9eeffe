"""The station runtime as named workers, each taking (config, stop_event).

    camera:<id>    frame -> zone observations          -> inbox (dropped and counted when full)
                   frame -> evidence frames (the last few, for flagged events)
    scales         poll every scale -> readings        -> inbox
    scanner:<id>   scanned codes                       -> inbox
    rules          inbox -> StationRules -> events, fill-enable writes

Only the rules worker touches the rule engine, so the engine needs no locks. Each worker loops
over one step (`camera_step`, `scale_step`, `scanner_step`, `drain`) and paces itself on wall
time; the steps stamp inputs with the injected agent clock, so a test drives them on a fake one.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import partial
from typing import IO

from edge_agent.station.camera import CameraError, FrameSource, OpenCVCamera
from edge_agent.station.config import StationConfig
from edge_agent.station.domain import (
    CodeScan,
    FillerLogin,
    LoginMethod,
    ScaleReading,
    ZoneObservation,
)
from edge_agent.station.events import EventFactory, EventSink
from edge_agent.station.evidence import EvidenceRecorder
from edge_agent.station.registry import CylinderRegistry
from edge_agent.station.report import ShiftReport, build_report
from edge_agent.station.rules import StationRules
from edge_agent.station.scale import ScaleError, ScaleSet
from edge_agent.station.scanner import (
    Scanner,
    ScannerError,
    SerialScanner,
    TcpScanner,
    WedgeScanner,
)
from edge_agent.station.vision import PersonDetector, ZoneAnalyzer

logger = logging.getLogger(__name__)

Worker = Callable[[StationConfig, threading.Event], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class ScaleFault:
    """A scale could not be read."""

    at: float
    scale_id: str
    message: str


Item = CodeScan | FillerLogin | ScaleReading | ZoneObservation | ScaleFault

RETRY_S = 1.0
"""Pause after a device error before the worker tries again (avoids a hot loop on a dead device)."""


@dataclass(frozen=True)
class StationInputs:
    """The station's boundaries, built from config (or the simulator)."""

    cameras: dict[str, FrameSource]
    scales: ScaleSet
    scanners: dict[str, Scanner]


class StationPipeline:
    """Wires boundaries, zone analysers and the rules into workers."""

    def __init__(
        self,
        config: StationConfig,
        inputs: StationInputs,
        registry: CylinderRegistry,
        sink: EventSink,
        device_id: str,
        clock: Clock = time.time,
        *,
        tz: tzinfo,
        wall_clock: Callable[[float], datetime] | None = None,
        person_detector: PersonDetector | None = None,
        evidence: EvidenceRecorder | None = None,
    ) -> None:
        self._config = config
        self._inputs = inputs
        self._clock = clock
        self.evidence = evidence
        self._events = EventFactory(device_id, sink, wall_clock, evidence)
        self.rules = StationRules(config, registry, self._events, inputs.scales, tz=tz)
        self.analyzers = {
            cam.id: ZoneAnalyzer(
                cam.id, config.zones, config.vision, (cam.width, cam.height), person_detector
            )
            for cam in config.cameras
            if cam.id in inputs.cameras
        }
        self.inbox: queue.Queue[Item] = queue.Queue(maxsize=config.queue_size)
        self.dropped: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._started_at = clock()
        self._login = re.compile(config.login_pattern)

    # --- entry points for other parts of the agent ---------------------------------------

    def login(self, login: FillerLogin) -> None:
        """A filler identified (face check at the station, or operator login)."""
        self.inbox.put(login)

    def report(self) -> ShiftReport:
        """The reconciliation report of the shift so far."""
        now = self._clock()
        return build_report(
            self._config.station_id,
            self.rules.counters,
            self._events.to_datetime(self._started_at),
            self._events.to_datetime(now),
        )

    # --- one step of each worker (the workers loop over these; tests call them directly) ---

    def camera_step(self, camera_id: str) -> bool:
        """Analyse one frame and queue its observations; False when the camera failed."""
        try:
            frame = self._inputs.cameras[camera_id].read()
        except CameraError as err:
            self.faults[f"camera:{camera_id}"] += 1
            logger.warning("%s", err)
            return False
        analyzer = self.analyzers[camera_id]
        at = self._clock()
        observations = analyzer.process(frame, at)
        if self.evidence is not None:
            # Kept before the observations are queued, so a rule they trigger finds the frame.
            self.evidence.keep(camera_id, at, frame, analyzer)
        for obs in observations:
            try:
                self.inbox.put_nowait(obs)
            except queue.Full:
                # Observations are periodic; losing one is better than stalling capture.
                self.dropped[f"camera:{camera_id}"] += 1
        return True

    def scale_step(self) -> None:
        """Read every scale once and queue the readings (or faults)."""
        scales = self._inputs.scales
        for scale_id in scales.ids():
            at = self._clock()
            item: Item
            try:
                item = scales.read(scale_id, at)
            except ScaleError as err:
                self.faults[f"scale:{scale_id}"] += 1
                item = ScaleFault(at, scale_id, str(err))
            self.inbox.put(item)

    def scanner_step(self, scale_id: str, timeout_s: float) -> bool:
        """Queue the code scanned within `timeout_s`, if any; False when the scanner failed."""
        try:
            code = self._inputs.scanners[scale_id].read(timeout_s)
        except ScannerError as err:
            self.faults[f"scanner:{scale_id}"] += 1
            logger.warning("%s", err)
            return False
        if code is None:
            return True
        badge = self._login.fullmatch(code)
        if badge is not None:
            # The filler scanned their own badge: an operator login at this scale.
            self.inbox.put(
                FillerLogin(self._clock(), scale_id, badge.group("id"), LoginMethod.LOGIN)
            )
        else:
            self.inbox.put(CodeScan(self._clock(), scale_id, code))
        return True

    def drain(self) -> int:
        """Apply every queued input in arrival order; the number applied."""
        applied = 0
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return applied
            self.apply(item)
            applied += 1

    # --- workers -----------------------------------------------------------------------

    def camera_worker(
        self, config: StationConfig, stop_event: threading.Event, camera_id: str
    ) -> None:
        """Read frames, analyse the zones, hand observations to the rules."""
        period = 1.0 / next(c.max_fps for c in config.cameras if c.id == camera_id)
        while not stop_event.is_set():
            began = time.monotonic()
            if not self.camera_step(camera_id):
                stop_event.wait(RETRY_S)
                continue
            stop_event.wait(max(period - (time.monotonic() - began), 0.0))

    def scale_worker(self, config: StationConfig, stop_event: threading.Event) -> None:
        """Poll every scale at the shortest configured interval."""
        period = min(s.poll_interval_s for s in config.scales)
        while not stop_event.is_set():
            self.scale_step()
            stop_event.wait(period)

    def scanner_worker(
        self, config: StationConfig, stop_event: threading.Event, scale_id: str
    ) -> None:
        """Forward scanned codes; a scan is never dropped."""
        while not stop_event.is_set():
            if not self.scanner_step(scale_id, 0.2):
                stop_event.wait(RETRY_S)

    def rules_worker(self, config: StationConfig, stop_event: threading.Event) -> None:
        """Apply inputs to the rules in arrival order."""
        while not stop_event.is_set():
            try:
                item = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            self.apply(item)
        # Drain what is left so scans that arrived before stop are judged.
        self.drain()

    def apply(self, item: Item) -> None:
        """Dispatch one input to the rule engine."""
        if isinstance(item, ZoneObservation):
            self.rules.on_observation(item)
        elif isinstance(item, ScaleReading):
            self.rules.on_reading(item)
        elif isinstance(item, CodeScan):
            self.rules.on_scan(item)
        elif isinstance(item, FillerLogin):
            self.rules.on_login(item)
        else:
            self.rules.on_scale_fault(item.scale_id, item.message)

    def workers(self) -> list[tuple[str, Worker]]:
        """The named workers of this station."""
        named: list[tuple[str, Worker]] = [
            (f"camera:{cid}", partial(self.camera_worker, camera_id=cid)) for cid in self.analyzers
        ]
        named.append(("scales", self.scale_worker))
        named += [
            (f"scanner:{sid}", partial(self.scanner_worker, scale_id=sid))
            for sid in self._inputs.scanners
        ]
        named.append(("rules", self.rules_worker))
        return named

    def start(self, stop_event: threading.Event) -> list[threading.Thread]:
        """Start every worker in its own named thread."""
        threads = [
            threading.Thread(
                target=worker, args=(self._config, stop_event), name=f"station-{name}", daemon=True
            )
            for name, worker in self.workers()
        ]
        for thread in threads:
            thread.start()
        logger.info("station %s: %d workers started", self._config.station_id, len(threads))
        return threads

    def close(self) -> None:
        """Drive every fill-enable off and release the devices (after the workers stopped)."""
        for scale_id in self._inputs.scales.ids():
            try:
                self._inputs.scales.set_fill_enable(scale_id, False)
            except ScaleError:
                logger.exception("could not switch off fill-enable of %s at shutdown", scale_id)
        self._inputs.scales.close()
        for camera in self._inputs.cameras.values():
            camera.close()
        for scanner in self._inputs.scanners.values():
            scanner.close()


def utc_wall_clock(at: float) -> datetime:
    """Agent time (Unix seconds) as an aware datetime."""
    return datetime.fromtimestamp(at, UTC)


def build_inputs(config: StationConfig, wedge_stream: IO[str] | None = None) -> StationInputs:
    """Open the real boundaries the config names (cameras, scales, scanners).

    A wedge scanner reads `wedge_stream` (the agent's stdin or a tty); `sim` kinds are refused
    here because the simulator builds its own twins.
    """
    scanners: dict[str, Scanner] = {}
    cameras: dict[str, FrameSource] = {}
    try:
        for sc in config.scanners:
            if sc.kind == "tcp":
                scanners[sc.scale_id] = TcpScanner(sc)
            elif sc.kind == "serial":
                scanners[sc.scale_id] = SerialScanner(sc)
            elif sc.kind == "wedge":
                if wedge_stream is None:
                    raise ScannerError(
                        f"scanner of {sc.scale_id}: wedge scanner needs an input stream"
                    )
                scanners[sc.scale_id] = WedgeScanner(sc, wedge_stream)
            else:
                raise ScannerError(f"scanner of {sc.scale_id}: kind 'sim' needs the simulator")
        for cam in config.cameras:
            cameras[cam.id] = OpenCVCamera(cam)
        scales = ScaleSet.from_config(config.scales)
    except (ScannerError, CameraError, ScaleError):
        # Nothing half-open: release what was opened before the failure.
        for scanner in scanners.values():
            scanner.close()
        for camera in cameras.values():
            camera.close()
        raise
    return StationInputs(cameras=cameras, scales=scales, scanners=scanners)
