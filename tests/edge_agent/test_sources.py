"""OpenCV frame sources: video file, image folder, reconnect, bounded queue that drops."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from contract.codes import ReasonCode
from edge_agent.cab.sources import CaptureWorker, QueueFeed, ReplayFeed, SourceError, open_capture
from edge_agent.cab.types import GateFault
from edge_agent.config import CameraSection
from tests.conftest import wait_until


def _video(path: Path, frames: int = 20) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((120, 160, 3), i * 10 % 255, np.uint8))
    writer.release()
    return path


def test_video_file_is_read_and_reopened(tmp_path: Path) -> None:
    section = CameraSection(
        source=str(_video(tmp_path / "clip.avi", 5)),
        fps=100.0,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.1,
    )
    stop = threading.Event()
    worker = CaptureWorker(section, stop).start()
    try:
        # More than one pass: the file was reopened.
        wait_until(lambda: worker.captured >= 12, timeout_s=20, what="12 frames")
        assert worker.reconnects >= 2
    finally:
        stop.set()
        worker.thread.join()


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((120, 160, 3), i * 20, np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    section = CameraSection(
        source=str(folder), fps=100.0, queue_size=2, reconnect_initial_s=0.05, reconnect_max_s=0.1
    )
    stop = threading.Event()
    worker = CaptureWorker(section, stop).start()
    try:
        wait_until(lambda: worker.captured >= 10, timeout_s=20, what="10 frames")
    finally:
        stop.set()
        worker.thread.join()
    assert worker.frames.qsize() == 2
    assert worker.dropped == worker.captured - 2


def test_missing_source_is_camera_lost_after_backoff(tmp_path: Path) -> None:
    section = CameraSection(
        source=str(tmp_path / "nope.avi"),
        lost_after_s=0.5,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )
    with pytest.raises(SourceError, match="does not exist"):
        open_capture(section)
    stop = threading.Event()
    worker = CaptureWorker(section, stop).start()
    try:
        feed = QueueFeed(worker)
        with pytest.raises(GateFault) as caught:
            while True:
                feed.next_frame(timeout_s=0.2)
        assert caught.value.reason == ReasonCode.CAMERA_LOST
        assert worker.reconnects >= 2
    finally:
        stop.set()
        worker.thread.join()


def test_replay_without_loop_ends_as_camera_lost() -> None:
    feed = ReplayFeed([np.zeros((4, 4, 3), np.uint8)], fps=10, loop=False)
    assert feed.next_frame(0.0) is not None
    with pytest.raises(GateFault):
        feed.next_frame(0.0)
