"""Frame sources through OpenCV (camera index, RTSP URL, video file, image folder).

The capture worker reconnects with exponential backoff and feeds a bounded queue that drops
the oldest frame (and counts it) instead of blocking the camera.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from contract.codes import ReasonCode
from edge_agent.cab.types import Frame, GateFault
from edge_agent.config import CameraSection

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class SourceError(Exception):
    """The source cannot be opened or stopped giving frames."""


class Capture(Protocol):
    """An opened frame source."""

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None when the source has none (end or failure)."""
        ...

    def close(self) -> None:
        """Release it."""
        ...


class OpenCvCapture:
    """cv2.VideoCapture on a camera index, an RTSP URL or a video file."""

    def __init__(self, source: str | int, width: int, height: int) -> None:
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open video source {source!r}")
        if isinstance(source, int):
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def read(self) -> np.ndarray | None:
        """Next frame or None."""
        ok, frame = self._cap.read()
        return np.asarray(frame, np.uint8) if ok and frame is not None else None

    def close(self) -> None:
        """Release the device."""
        self._cap.release()


class FolderCapture:
    """Images of a folder in name order, read once."""

    def __init__(self, folder: Path) -> None:
        self._files: Iterator[Path] = iter(
            sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        )

    def read(self) -> np.ndarray | None:
        """Next readable image or None at the end."""
        for path in self._files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return np.asarray(image, np.uint8)
            logger.warning("%s: not a readable image, skipped", path)
        return None

    def close(self) -> None:
        """Nothing to release."""


def open_capture(section: CameraSection) -> Capture:
    """Open the configured source: int or digit string = camera index, folder, URL or file."""
    source = section.source
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, str) and "://" not in source:
        path = Path(source)
        if path.is_dir():
            return FolderCapture(path)
        if not path.is_file():
            raise SourceError(f"video source {source!r} does not exist")
    return OpenCvCapture(source, section.width, section.height)


class CaptureWorker:
    """Named worker: reads frames into a bounded queue, reconnecting with backoff."""

    def __init__(self, section: CameraSection, stop_event: threading.Event) -> None:
        self.section = section
        self.stop_event = stop_event
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=section.queue_size)
        self.dropped = 0
        self.captured = 0
        self.reconnects = 0
        self.started = time.monotonic()
        self.last_frame_t: float | None = None
        self._index = 0
        self.thread = threading.Thread(target=self.run, name="camera-capture", daemon=True)

    def start(self) -> CaptureWorker:
        """Start the thread."""
        self.thread.start()
        return self

    def lost(self) -> bool:
        """No frame for `lost_after_s` (counted from start when none ever came)."""
        last = self.last_frame_t if self.last_frame_t is not None else self.started
        return time.monotonic() - last > self.section.lost_after_s

    def _push(self, image: np.ndarray) -> None:
        frame = Frame(image, time.monotonic(), self._index)
        self._index += 1
        self.captured += 1
        self.last_frame_t = frame.t
        while True:
            try:
                self.frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    continue

    def run(self) -> None:
        """Capture until stopped; a failed or ended source is reopened after a backoff."""
        delay = self.section.reconnect_initial_s
        period = 1.0 / self.section.fps
        while not self.stop_event.is_set():
            try:
                capture = open_capture(self.section)
            except SourceError as err:
                logger.warning("camera: %s; retry in %.1f s", err, delay)
                self.stop_event.wait(delay)
                delay = min(self.section.reconnect_max_s, delay * 2)
                self.reconnects += 1
                continue
            try:
                while not self.stop_event.is_set():
                    began = time.monotonic()
                    image = capture.read()
                    if image is None:
                        break
                    self._push(image)
                    delay = self.section.reconnect_initial_s
                    # Files and folders would otherwise be read far faster than real time.
                    self.stop_event.wait(max(0.0, period - (time.monotonic() - began)))
            finally:
                capture.close()
            if not self.stop_event.is_set():
                logger.warning("camera source ended or failed; reopening in %.1f s", delay)
                self.stop_event.wait(delay)
                delay = min(self.section.reconnect_max_s, delay * 2)
                self.reconnects += 1


class QueueFeed:
    """The gate's FrameFeed on a CaptureWorker: CAMERA_LOST when frames stop coming."""

    def __init__(self, worker: CaptureWorker) -> None:
        self.worker = worker

    def next_frame(self, timeout_s: float) -> Frame | None:
        """Next frame; raise GateFault(CAMERA_LOST) once the camera has been silent too long."""
        try:
            return self.worker.frames.get(timeout=min(timeout_s, self.worker.section.lost_after_s))
        except queue.Empty:
            if self.worker.lost():
                raise GateFault(
                    ReasonCode.CAMERA_LOST,
                    f"no frame for {self.worker.section.lost_after_s:.1f} s from "
                    f"{self.worker.section.source!r}",
                ) from None
            return None

    def drain(self) -> None:
        """Throw away queued frames (they predate the request being served)."""
        while True:
            try:
                self.worker.frames.get_nowait()
            except queue.Empty:
                return


class ReplayFeed:
    """A FrameFeed over frames already in memory, with timestamps at a nominal rate.

    Used for replaying recorded clips (bench, tests); `loop` repeats them so that a window is
    judged on frame time, not on how fast the frames are analysed.
    """

    def __init__(self, images: list[np.ndarray], fps: float, loop: bool = True) -> None:
        if not images:
            raise ValueError("ReplayFeed needs at least one image")
        self.images = images
        self.fps = fps
        self.loop = loop
        self._index = 0

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame; after the last one, CAMERA_LOST unless looping."""
        if self._index >= len(self.images) and not self.loop:
            raise GateFault(ReasonCode.CAMERA_LOST, "replay ended")
        image = self.images[self._index % len(self.images)]
        frame = Frame(image, self._index / self.fps, self._index)
        self._index += 1
        return frame
