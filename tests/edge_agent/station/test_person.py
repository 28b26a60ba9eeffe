"""The pose-detection person check (mediapipe pose_detection converted to ONNX), on real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from edge_agent.station.config import VisionConfig, ZoneConfig
from edge_agent.station.person import PersonModelError, PoseDetector, build_pose_detection_onnx
from edge_agent.station.vision import ZoneAnalyzer
from models.convert.mediapipe_models import MEDIAPIPE_DIST, MEDIAPIPE_VERSION
from models.convert.wheel_source import default_wheel_cache, find_cached_wheel


@pytest.fixture(scope="module")
def pose_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if find_cached_wheel(MEDIAPIPE_DIST, MEDIAPIPE_VERSION, default_wheel_cache()) is None:
        pytest.skip("mediapipe wheel not in the wheel cache (no network in tests)")
    return build_pose_detection_onnx(tmp_path_factory.mktemp("station_models"))


def _square(x0: int, y0: int, size: int) -> list[tuple[int, int]]:
    return [(x0, y0), (x0 + size, y0), (x0 + size, y0 + size), (x0, y0 + size)]


@pytest.mark.slow
def test_person_found_in_the_operator_area_that_holds_one(pose_model: Path) -> None:
    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100:612, 20:532] = astronaut
    zones = [
        ZoneConfig(
            id="A",
            camera_id="c",
            scale_id="SA",
            polygon=_square(540, 100, 100),
            operator_polygon=_square(20, 100, 512),
        ),
        ZoneConfig(
            id="B",
            camera_id="c",
            scale_id="SB",
            polygon=_square(1180, 100, 90),
            operator_polygon=_square(660, 100, 512),
        ),
    ]
    vision = VisionConfig(person_method="pose", person_model=pose_model, person_every_n_frames=1)
    analyzer = ZoneAnalyzer("c", zones, vision, (1280, 720), PoseDetector(pose_model, 0.5, 0.3))
    obs = {o.zone_id: o.person_present for o in analyzer.process(frame, 0.0)}
    assert obs == {"A": True, "B": False}


def test_pose_method_without_detector_or_model_fails_closed(tmp_path: Path) -> None:
    zone = ZoneConfig(
        id="A",
        camera_id="c",
        scale_id="SA",
        polygon=_square(0, 0, 10),
        operator_polygon=_square(20, 0, 10),
    )
    with pytest.raises(ValueError, match="needs a person detector"):
        ZoneAnalyzer(
            "c",
            [zone],
            VisionConfig(person_method="pose", person_model=tmp_path / "x.onnx"),
            (64, 64),
        )
    with pytest.raises(PersonModelError, match="not found"):
        PoseDetector(tmp_path / "missing.onnx", 0.5, 0.3)
