"""Evidence frames of flagged station events: recent frames per camera, encoded on demand.

The camera workers keep their last few frames (references to the arrays they read, no copies)
with the detector boxes of each. When a rule flags an event, the frame nearest the event's
time from each camera that sees the scale is encoded as JPEG and stored by content hash
through the outbox (`Outbox.add_evidence`, the cab's face-frame path): the shared delivery
worker uploads it before the events and prunes it within `store.evidence_retention_days` and
`store.evidence_max_mb`.

Fail safe: an image that cannot be made (no frame, a stale frame, an encoder error, over the
size limit, a disk error) is logged and counted under `evidence:<camera>`; the event goes out
without it. A violation is never lost to its image.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from contract.messages import Box, EvidenceDetection, EvidenceRef, EvidenceZone
from edge_agent.station.config import EvidenceConfig, StationConfig, ZoneConfig
from edge_agent.station.vision import ZoneAnalyzer

logger = logging.getLogger(__name__)

MEDIA_TYPE = "image/jpeg"


class EvidenceError(Exception):
    """An evidence image could not be made or stored."""


@dataclass(frozen=True)
class Snapshot:
    """One analysed camera frame and the detector boxes found in it (full-frame pixels)."""

    at: float
    frame: np.ndarray
    cylinders: tuple[Box, ...] = ()
    people: tuple[Box, ...] = ()


class FrameBuffer:
    """The last `keep` frames of every camera; thread-safe (camera workers write, rules read).

    Frames are held by reference: a frame source returns a new array per read, so nothing is
    copied and memory is bounded by `keep` frames per camera.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._frames: dict[str, deque[Snapshot]] = {}
        self._lock = threading.Lock()

    def keep(self, camera_id: str, snapshot: Snapshot) -> None:
        """Remember one analysed frame (the oldest one of the camera goes)."""
        with self._lock:
            ring = self._frames.setdefault(camera_id, deque(maxlen=self._keep))
            ring.append(snapshot)

    def nearest(self, camera_id: str, at: float) -> Snapshot | None:
        """The kept frame of `camera_id` taken closest to `at`; None when there is none."""
        with self._lock:
            ring = tuple(self._frames.get(camera_id, ()))
        return min(ring, key=lambda s: abs(s.at - at), default=None)


def encode_jpeg(frame: np.ndarray, quality: int, max_bytes: int) -> bytes:
    """JPEG bytes of a BGR frame; EvidenceError when it cannot be encoded or is too large."""
    try:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    except cv2.error as err:
        raise EvidenceError(f"JPEG encoding failed: {err}") from err
    if not ok:
        raise EvidenceError("JPEG encoding failed")
    if data.size > max_bytes:
        raise EvidenceError(
            f"JPEG is {data.size / 1024:.0f} KiB, over the {max_bytes / 1024:.0f} KiB limit "
            "(station.evidence.max_kb)"
        )
    return bytes(data.tobytes())


class EvidenceStore(Protocol):
    """Stores an image by content hash and indexes it for upload (`edge_agent.outbox.Outbox`)."""

    def add_evidence(self, folder: Path, data: bytes, media_type: str) -> str:
        """Write the image, index it, return its SHA-256."""
        ...


def _bounds(points: list[tuple[int, int]]) -> Box:
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    return (min(xs), min(ys), max(xs), max(ys))


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _polygon(points: list[tuple[int, int]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in points)


class EvidenceRecorder:
    """Keeps each camera's recent frames and makes the evidence refs of flagged events."""

    def __init__(self, config: StationConfig, store: EvidenceStore, folder: Path) -> None:
        self._settings: EvidenceConfig = config.evidence
        self.frames = FrameBuffer(config.evidence.frames_kept)
        self._store = store
        self._folder = folder
        self.faults: Counter[str] = Counter()
        """Images not attached, by `evidence:<camera>` (shown in station_status.json)."""
        self._zones: dict[str, dict[str, list[ZoneConfig]]] = {}
        for zone in config.zones:
            by_camera = self._zones.setdefault(zone.scale_id, {})
            by_camera.setdefault(zone.camera_id, []).append(zone)
        # The last frame stored per camera: an event and its fill at one moment share it.
        self._stored: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def keep(self, camera_id: str, at: float, frame: np.ndarray, analyzer: ZoneAnalyzer) -> None:
        """Remember a frame just analysed, with the analyser's current detector boxes."""
        self.frames.keep(
            camera_id, Snapshot(at, frame, analyzer.cylinder_boxes, analyzer.person_boxes)
        )

    def for_scale(
        self, at: float, scale_id: str, wall: Callable[[float], datetime]
    ) -> tuple[EvidenceRef, ...]:
        """One ref per camera that sees the scale's zones; failures are logged, never raised."""
        refs = []
        for camera_id, zones in self._zones.get(scale_id, {}).items():
            try:
                refs.append(self._ref(at, camera_id, zones, wall))
            except EvidenceError as err:
                self.faults[f"evidence:{camera_id}"] += 1
                logger.error(
                    "scale %s: no evidence image from camera %s (%s); the event goes without it",
                    scale_id,
                    camera_id,
                    err,
                )
        return tuple(refs)

    def _ref(
        self,
        at: float,
        camera_id: str,
        zones: list[ZoneConfig],
        wall: Callable[[float], datetime],
    ) -> EvidenceRef:
        snapshot = self.frames.nearest(camera_id, at)
        if snapshot is None:
            raise EvidenceError("no frame from this camera yet")
        gap = abs(snapshot.at - at)
        if gap > self._settings.max_frame_age_s:
            raise EvidenceError(
                f"nearest frame is {gap:.1f} s from the event "
                f"(station.evidence.max_frame_age_s {self._settings.max_frame_age_s:g})"
            )
        sha = self._stored_sha(camera_id, snapshot)
        area = [_bounds(z.polygon) for z in zones] + [_bounds(z.operator_polygon) for z in zones]
        detections = tuple(
            EvidenceDetection(label=label, box=box)
            for label, boxes in (("cylinder", snapshot.cylinders), ("person", snapshot.people))
            for box in boxes
            if any(_overlaps(box, a) for a in area)
        )
        return EvidenceRef(
            sha256=sha,
            media_type=MEDIA_TYPE,
            role="zone",
            box=_bounds(zones[0].polygon),
            camera_id=camera_id,
            captured_at=wall(snapshot.at),
            zones=tuple(
                EvidenceZone(
                    zone_id=z.id,
                    scale_id=z.scale_id,
                    polygon=_polygon(z.polygon),
                    operator_polygon=_polygon(z.operator_polygon),
                )
                for z in zones
            ),
            detections=detections,
        )

    def _stored_sha(self, camera_id: str, snapshot: Snapshot) -> str:
        """Encode and store the frame, once per frame."""
        with self._lock:
            last = self._stored.get(camera_id)
            if last is not None and last[0] == snapshot.at:
                return last[1]
        data = encode_jpeg(
            snapshot.frame, self._settings.jpeg_quality, self._settings.max_kb * 1024
        )
        try:
            sha = self._store.add_evidence(self._folder, data, MEDIA_TYPE)
        except (OSError, sqlite3.Error) as err:
            raise EvidenceError(f"image not stored: {err}") from err
        with self._lock:
            self._stored[camera_id] = (snapshot.at, sha)
        return sha
