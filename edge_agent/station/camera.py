"""Camera boundary for the station: OpenCV capture, and a twin that renders the simulator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from edge_agent.station.config import StationCameraConfig

logger = logging.getLogger(__name__)


class CameraError(Exception):
    """A camera could not deliver a frame."""


class FrameSource(Protocol):
    """One camera."""

    camera_id: str

    def read(self) -> np.ndarray:
        """The next BGR frame; raises CameraError."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class OpenCVCamera:
    """A camera read with cv2.VideoCapture (device index, file or RTSP URL)."""

    def __init__(self, config: StationCameraConfig) -> None:
        self.camera_id = config.id
        source: int | str = int(config.source) if config.source.isdigit() else config.source
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            raise CameraError(f"camera {config.id}: cannot open {config.source!r}")
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        self._size = (config.width, config.height)

    def read(self) -> np.ndarray:
        """Grab one frame; a frame of another size than calibrated is an error."""
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CameraError(f"camera {self.camera_id}: no frame")
        if (frame.shape[1], frame.shape[0]) != self._size:
            raise CameraError(
                f"camera {self.camera_id}: frame {frame.shape[1]}x{frame.shape[0]}, calibrated for {self._size[0]}x{self._size[1]}"
            )
        return frame

    def close(self) -> None:
        """Release the capture."""
        self._cap.release()


class CallbackCamera:
    """Frames from a function (the simulator's renderer)."""

    def __init__(self, camera_id: str, render: Callable[[], np.ndarray]) -> None:
        self.camera_id = camera_id
        self._render = render
        self._lock = threading.Lock()

    def read(self) -> np.ndarray:
        """Render one frame."""
        with self._lock:
            return self._render()

    def close(self) -> None:
        """Nothing to release."""
