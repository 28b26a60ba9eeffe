"""Evidence frames on flagged station events, driven like the pipeline tests (fake clock, sim).

The image goes through the real outbox (SQLite evidence index and content-addressed files),
so what the delivery worker would upload is what is checked here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from contract.auth import public_key_b64
from contract.codes import ReasonCode
from contract.messages import (
    EvidenceRef,
    StationFillEvent,
    StationViolationEvent,
    StationViolationPayload,
)
from edge_agent.outbox import Outbox
from edge_agent.station.agent import StationAgent
from edge_agent.station.camera import CallbackCamera, CameraError
from edge_agent.station.config import StationConfig
from edge_agent.station.domain import CodeScan
from edge_agent.station.events import EventFactory, MemorySink
from edge_agent.station.evidence import (
    EvidenceError,
    EvidenceRecorder,
    Snapshot,
    encode_jpeg,
)
from edge_agent.station.pipeline import StationInputs
from edge_agent.station.scale import ScaleSet
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.connected import sim_agent_config
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
from tests.edge_agent.station.test_pipeline import LAYOUT, S1, S2, S3, Rig, _play, _rig
from tests.edge_agent.station.test_sync import KEY, message, signed, synced

THUMB = 8
"""Frames are compared at 1/8 size: enough to tell moments apart, small enough to keep all."""


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


def _thumb(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return cv2.resize(frame, (w // THUMB, h // THUMB), interpolation=cv2.INTER_AREA).astype(
        np.float32
    )


class Recorded:
    """The camera's frames by the agent time they were read (as thumbnails)."""

    def __init__(self) -> None:
        self.rig: Rig | None = None
        self.frames: dict[float, np.ndarray] = {}

    def render(self) -> np.ndarray:
        assert self.rig is not None
        frame = self.rig.station.render("cam1")
        self.frames[self.rig.clock()] = _thumb(frame)
        return frame


def _recorder(outbox: Outbox, folder: Path) -> Callable[[StationConfig], EvidenceRecorder]:
    return lambda config: EvidenceRecorder(config, outbox, folder)


def _stored(outbox: Outbox, ref: EvidenceRef) -> bytes:
    """The bytes the delivery worker would upload for `ref`."""
    due = {sha: path for sha, _, path in outbox.evidence_due(limit=100)}
    assert ref.sha256 in due, "the image is not in the outbox's upload index"
    return due[ref.sha256].read_bytes()


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_flagged_events_carry_the_frame_of_their_zone(outbox: Outbox, tmp_path: Path) -> None:
    actions = (
        Person(0, S1, True),
        Login(0.5, S1, reg.FILLER),
        Place(1, S1, reg.GOOD[0]),
        Scan(2, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, rate_kg_s=2.0),
        Person(0, S2, True),
        Place(1, S2, reg.FOREIGN),
        Scan(2, S2, reg.FOREIGN),
        Person(0, S3, True),
        Place(1, S3, reg.GOOD[1]),
        OpenValve(3, S3, 14.0, bypass=True, rate_kg_s=2.0),
        Remove(20, S1),
        Remove(20, S2),
        Remove(20, S3),
    )
    recorded = Recorded()
    folder = tmp_path / "evidence"
    rig = _rig(
        Scenario("evidence", 24.0, actions),
        render=recorded.render,
        recorder=_recorder(outbox, folder),
        fill_end_stable_s=2.0,
        filler_absent_s=60.0,
    )
    recorded.rig = rig
    _play(rig, 24.0)
    config, sink = rig.config, rig.sink
    assert sorted(v.reason for v in sink.violations()) == sorted(
        [ReasonCode.FOREIGN_CYLINDER, ReasonCode.UNSCANNED_FILL]
    )
    fills = {f.payload.scale_id: f for f in sink.fills()}
    assert fills[S1].reason == ReasonCode.FILL_OK and fills[S1].evidence == ()
    flagged: list[StationViolationEvent | StationFillEvent] = [*sink.violations(), fills[S3]]
    assert fills[S3].reason == ReasonCode.UNSCANNED_FILL
    empty = _thumb(rig.station.empty_frame("cam1"))
    for event in flagged:
        scale_id = event.payload.scale_id
        zone = next(z for z in config.zones if z.scale_id == scale_id)
        (ref,) = event.evidence
        assert (ref.role, ref.media_type, ref.camera_id) == ("zone", "image/jpeg", "cam1")
        assert [z.zone_id for z in ref.zones] == [zone.id]
        assert ref.zones[0].polygon == tuple((float(x), float(y)) for x, y in zone.polygon)
        assert ref.zones[0].operator_polygon == tuple(
            (float(x), float(y)) for x, y in zone.operator_polygon
        )
        xs, ys = [p[0] for p in zone.polygon], [p[1] for p in zone.polygon]
        assert ref.box == (min(xs), min(ys), max(xs), max(ys))
        assert ref.detections == ()  # presence by background difference: no detector boxes
        # The frame of the moment: one camera period at most from the event.
        assert ref.captured_at is not None
        period = timedelta(seconds=1 / config.cameras[0].max_fps)
        assert abs(ref.captured_at - event.occurred_at) <= period
        data = _stored(outbox, ref)
        assert hashlib.sha256(data).hexdigest() == ref.sha256
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (LAYOUT.height, LAYOUT.width, 3)
        assert data[:2] == b"\xff\xd8"  # a JPEG, not a PNG under a JPEG name
        taken = (ref.captured_at - rig.pipeline.report().started_at).total_seconds()
        frame = recorded.frames[round(taken, 3)]
        assert _mean_diff(_thumb(image), frame) < 3.0
        # ...and it shows the cylinder on the scale, which the empty station does not.
        x0, y0, x1, y1 = (int(v) // THUMB for v in ref.box)
        assert _mean_diff(_thumb(image)[y0:y1, x0:x1], empty[y0:y1, x0:x1]) > 10.0
    assert rig.pipeline.evidence is not None and not rig.pipeline.evidence.faults
    assert {p.name for p in folder.iterdir()} == {f"{e.evidence[0].sha256}.jpg" for e in flagged}


def test_an_image_over_the_size_limit_is_left_off_and_the_violation_goes(
    outbox: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "evidence"
    rig = _rig(
        Scenario("big", 3.0, (Place(0, S2, reg.FOREIGN), Scan(2, S2, reg.FOREIGN))),
        recorder=_recorder(outbox, folder),
        evidence={"max_kb": 16, "jpeg_quality": 100},
    )
    with caplog.at_level(logging.ERROR, logger="edge_agent.station.evidence"):
        _play(rig, 3.0)
    (violation,) = rig.sink.violations()
    assert violation.reason == ReasonCode.FOREIGN_CYLINDER and violation.evidence == ()
    assert rig.pipeline.evidence is not None
    assert rig.pipeline.evidence.faults == {"evidence:cam1": 1}
    assert "over the 16 KiB limit (station.evidence.max_kb)" in caplog.text
    assert "the event goes without it" in caplog.text
    # Nothing half-written: no file, nothing queued for upload.
    assert outbox.evidence_due(limit=10) == []
    assert not folder.exists() or not any(folder.iterdir())


def test_a_disk_error_leaves_the_image_off_and_the_violation_goes(
    outbox: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("a file where the evidence folder should be")
    rig = _rig(
        Scenario("disk", 3.0, (Place(0, S2, reg.FOREIGN), Scan(2, S2, reg.FOREIGN))),
        recorder=_recorder(outbox, folder),
    )
    with caplog.at_level(logging.ERROR, logger="edge_agent.station.evidence"):
        _play(rig, 3.0)
    (violation,) = rig.sink.violations()
    assert violation.evidence == ()
    assert "image not stored" in caplog.text
    assert outbox.evidence_due(limit=10) == []


def test_no_frame_or_a_stale_frame_is_not_attached(
    outbox: Outbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alive = {"camera": True}
    recorded = Recorded()

    def render() -> np.ndarray:
        if not alive["camera"]:
            raise CameraError("cam1: no frame")
        return recorded.render()

    rig = _rig(
        Scenario("stale", 10.0, (Place(0, S2, reg.FOREIGN),)),
        render=render,
        recorder=_recorder(outbox, tmp_path / "evidence"),
    )
    recorded.rig = rig
    pipeline, clock, scanners = rig.pipeline, rig.clock, rig.scanners
    with caplog.at_level(logging.ERROR, logger="edge_agent.station.evidence"):
        # Scanned before the camera delivered anything.
        scanners[S2].put(reg.FOREIGN)
        assert pipeline.scanner_step(S2, 0.0)
        pipeline.drain()
        clock.advance_to(0.5)
        rig.station.advance(0.5)
        assert pipeline.camera_step("cam1")
        alive["camera"] = False
        clock.advance_to(5.0)
        assert not pipeline.camera_step("cam1")  # the camera stalled
        scanners[S2].put(reg.FOREIGN)
        assert pipeline.scanner_step(S2, 0.0)
        pipeline.drain()
    assert [v.evidence for v in rig.sink.violations()] == [(), ()]
    assert pipeline.evidence is not None and pipeline.evidence.faults == {"evidence:cam1": 2}
    assert "no frame from this camera yet" in caplog.text
    assert "nearest frame is 4.5 s from the event" in caplog.text
    assert pipeline.faults == {"camera:cam1": 1}


def test_encode_failure_is_an_evidence_error() -> None:
    with pytest.raises(EvidenceError, match="JPEG encoding failed"):
        encode_jpeg(np.zeros((8, 8, 2), np.uint8), 85, 1 << 20)
    with pytest.raises(EvidenceError, match="over the 1 KiB limit"):
        encode_jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8), 95, 1024)
    small = encode_jpeg(np.zeros((8, 8, 3), np.uint8), 85, 1024)
    assert small[:2] == b"\xff\xd8"


class _BrokenEvidence:
    """An evidence source with a bug: the event must still go out."""

    def for_scale(
        self, at: float, scale_id: str, wall: Callable[[float], datetime]
    ) -> tuple[EvidenceRef, ...]:
        raise RuntimeError("bug in the evidence code")


def test_a_bug_in_the_evidence_code_never_loses_the_violation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MemorySink()
    events = EventFactory("ST", sink, evidence=_BrokenEvidence())
    with caplog.at_level(logging.ERROR, logger="edge_agent.station.events"):
        events.violation(
            1.0, ReasonCode.OVERFILL, StationViolationPayload(scale_id=S1, observed=16.0)
        )
    (violation,) = sink.violations()
    assert violation.reason == ReasonCode.OVERFILL and violation.evidence == ()
    assert "the event goes without it" in caplog.text and "bug in the evidence code" in caplog.text


def test_detector_boxes_near_the_zone_are_recorded(outbox: Outbox, tmp_path: Path) -> None:
    config = station_config(LAYOUT, reg.STATION_ID)
    recorder = EvidenceRecorder(config, outbox, tmp_path / "evidence")
    frame = SimStation(LAYOUT, Scenario("f", 1.0, ())).empty_frame("cam1")
    z1, z3 = (next(z for z in config.zones if z.scale_id == s) for s in (S1, S3))
    inside = (float(z1.polygon[0][0] + 10), float(z1.polygon[0][1] + 10), 300.0, 400.0)
    elsewhere = (float(z3.polygon[0][0] + 5), 50.0, float(z3.polygon[0][0] + 60), 300.0)
    filler = (float(z1.operator_polygon[0][0]), 60.0, 100.0, 500.0)
    recorder.frames.keep("cam1", Snapshot(1.0, frame, (inside, elsewhere), (filler,)))
    (ref,) = recorder.for_scale(1.05, S1, lambda t: datetime.fromtimestamp(t, UTC))
    assert [(d.label, d.box) for d in ref.detections] == [
        ("cylinder", inside),
        ("person", filler),
    ]
    assert ref.captured_at == datetime.fromtimestamp(1.0, UTC)
    # The violation and its fill at one moment share one stored image.
    (again,) = recorder.for_scale(1.0, S1, lambda t: datetime.fromtimestamp(t, UTC))
    assert again.sha256 == ref.sha256 and len(outbox.evidence_due(limit=10)) == 1


def test_the_station_agent_stores_evidence_in_its_outbox(tmp_path: Path) -> None:
    """StationAgent wiring: frames kept by its pipeline, images in store.evidence_dir."""
    synced(tmp_path).install(signed(message()))
    layout = make_layout(1, 1)
    (cell,) = layout.cells
    station = station_config(layout, reg.STATION_ID).model_dump(mode="json")
    station["registry_path"] = str(tmp_path / "reg.json")
    config = sim_agent_config(
        "http://127.0.0.1:9",
        "station-01",
        "k" * 64,
        public_key_b64(KEY.public_key()),
        tmp_path / "store",
        station,
    )
    sim = SimStation(layout, Scenario("agent", 2.0, (Place(0, cell.scale_id, reg.UNREGISTERED),)))
    sim.advance(0.5)
    inputs = StationInputs(
        cameras={"cam1": CallbackCamera("cam1", lambda: sim.render("cam1"))},
        scales=ScaleSet.from_config(config.station.scales, sim=dict(sim.sim_scales())),
        scanners={},
    )
    now = datetime.now(UTC).timestamp()
    agent = StationAgent(config, inputs, None, clock=lambda: now)
    try:
        assert agent.pipeline.camera_step("cam1")
        agent.pipeline.inbox.put(CodeScan(now, cell.scale_id, reg.UNREGISTERED))
        agent.pipeline.drain()
        (pending,) = agent.outbox.due(10)
        event = Outbox.parse(pending)
        assert event.reason == ReasonCode.UNREGISTERED_CYLINDER
        (ref,) = event.evidence
        ((sha, media_type, path),) = agent.outbox.evidence_due(10)
        assert (sha, media_type) == (ref.sha256, "image/jpeg")
        assert path.parent == config.store.evidence_dir
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
        assert agent.status()["faults"] == {}
    finally:
        agent.outbox.close()
