"""Camera zones: YAML round trip, the zones command, and drift detection by ORB + homography."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.zones import (
    DriftSettings,
    DriftStatus,
    Zone,
    ZoneError,
    check_drift,
    load_zones,
    make_zone_file,
    parse_zone_arg,
    save_zones,
)
from jifang.cli import app
from tests.models import faces

SEAT = "seat:100,100;300,100;300,300;100,300"
DOOR = "door:350,50;500,50;500,400"


def _scene() -> np.ndarray:
    return faces.astronaut()  # 512x512, textured enough for ORB


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = image.shape[:2]
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _jitter(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sensor noise and an exposure change: what two frames of a still camera differ by."""
    noise = np.random.default_rng(seed).normal(0, 3, image.shape)
    return np.clip(image.astype(np.float64) * 1.05 + 8 + noise, 0, 255).astype(np.uint8)


def test_zone_file_round_trips_through_yaml(tmp_path: Path) -> None:
    zones = [parse_zone_arg(SEAT), parse_zone_arg(DOOR)]
    original = make_zone_file("0", _scene(), "zones.reference.png", zones, DriftSettings())
    path = save_zones(tmp_path / "zones.yaml", original)
    loaded = load_zones(path)
    assert loaded == original
    assert loaded.zones[1].polygon == ((350.0, 50.0), (500.0, 50.0), (500.0, 400.0))


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("seat:1,1;2,2", "at least 3 items"),
        ("seat:1,1;2,2;3,3", "encloses no area"),
        ("seat:1,1;x,2;3,3", "x,y pairs"),
        ("seat 1,1;5,1;5,5", "expected NAME:x,y"),
        ("bad name:1,1;5,1;5,5", "zone 'bad name'"),
    ],
)
def test_bad_polygons_are_named_errors(arg: str, message: str) -> None:
    with pytest.raises(ZoneError, match=message):
        parse_zone_arg(arg)


def test_zone_file_refuses_points_outside_the_frame_and_repeated_names() -> None:
    outside = Zone(name="far", polygon=((10, 10), (600, 10), (600, 50)))
    with pytest.raises(ZoneError, match=r"zone 'far': point \(600, 10\) is outside the 512x512"):
        make_zone_file("0", _scene(), "r.png", [outside], DriftSettings())
    twice = [parse_zone_arg(SEAT), parse_zone_arg(SEAT)]
    with pytest.raises(ZoneError, match="zone 'seat' is listed twice"):
        make_zone_file("0", _scene(), "r.png", twice, DriftSettings())


def test_a_shifted_frame_is_flagged_and_a_still_one_is_not() -> None:
    scene = _scene()
    zones = (parse_zone_arg(SEAT), parse_zone_arg(DOOR))
    settings = DriftSettings()
    still = check_drift(scene, _jitter(scene), zones, settings)
    assert still.status == DriftStatus.OK, still.reason
    assert still.shift_px is not None and still.shift_px < 2.0
    moved = check_drift(scene, _jitter(_shifted(scene, 15, -10), seed=1), zones, settings)
    assert moved.status == DriftStatus.MOVED, moved.reason
    assert moved.shift_px == pytest.approx(np.hypot(15, 10), abs=2.0)
    blank = np.full_like(scene, 128)
    assert check_drift(scene, blank, zones, settings).status == DriftStatus.UNVERIFIABLE
    smaller = cv2.resize(scene, (256, 256))
    resized = check_drift(scene, smaller, zones, settings)
    assert resized.status == DriftStatus.UNVERIFIABLE and "differs" in resized.reason


def test_zones_and_check_drift_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    camera = tmp_path / "frame.png"
    cv2.imwrite(str(camera), _scene())
    out = tmp_path / "site" / "zones.yaml"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "zones",
            "--camera",
            str(camera),
            "--out",
            str(out),
            "--zone",
            SEAT,
            "--zone",
            DOOR,
        ],
    )
    assert result.exit_code == 0, result.output
    zone_file = load_zones(out)
    assert [z.name for z in zone_file.zones] == ["seat", "door"]
    reference = cv2.imread(str(out.parent / zone_file.reference_frame))
    overlay = cv2.imread(str(out.parent / "zones.overlay.png"))
    assert reference is not None and np.array_equal(reference, _scene())
    assert overlay is not None and not np.array_equal(overlay, reference)

    still = tmp_path / "still.png"
    cv2.imwrite(str(still), _jitter(_scene()))
    ok = runner.invoke(
        app, ["calibrate", "check-drift", "--zones", str(out), "--camera", str(still)]
    )
    assert ok.exit_code == 0 and ok.output.startswith("ok:"), ok.output
    moved_png, drawn = tmp_path / "moved.png", tmp_path / "drift.png"
    cv2.imwrite(str(moved_png), _shifted(_scene(), 0, 25))
    moved = runner.invoke(
        app,
        [
            "calibrate",
            "check-drift",
            "--zones",
            str(out),
            "--camera",
            str(moved_png),
            "--overlay",
            str(drawn),
        ],
    )
    assert moved.exit_code == 3 and moved.output.startswith("moved:"), moved.output
    assert cv2.imread(str(drawn)) is not None

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    headless = runner.invoke(
        app, ["calibrate", "zones", "--camera", str(camera), "--out", str(tmp_path / "other.yaml")]
    )
    assert headless.exit_code == 1 and "give zones with --zone or --polygons" in headless.output
    missing = runner.invoke(
        app,
        [
            "calibrate",
            "zones",
            "--camera",
            str(tmp_path / "no.png"),
            "--out",
            str(tmp_path / "x.yaml"),
            "--zone",
            SEAT,
        ],
    )
    assert missing.exit_code == 1 and "cannot read the image" in missing.output
    assert not (tmp_path / "x.yaml").exists() and not (tmp_path / "other.yaml").exists()


def test_zones_from_a_polygon_file_and_a_video_source(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
    if not writer.isOpened():
        pytest.skip("OpenCV build cannot write MJPG video")
    for _ in range(8):
        writer.write(_scene())
    writer.release()
    polygons = tmp_path / "polygons.yaml"
    polygons.write_text(
        "zones:\n- name: fill-bay\n  polygon: [[10, 10], [200, 10], [200, 150], [10, 150]]\n",
        encoding="utf-8",
    )
    out = tmp_path / "zones.yaml"
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "zones",
            "--camera",
            str(video),
            "--out",
            str(out),
            "--polygons",
            str(polygons),
        ],
    )
    assert result.exit_code == 0, result.output
    loaded = load_zones(out)
    assert loaded.camera == str(video) and (loaded.frame_width, loaded.frame_height) == (512, 512)
    assert loaded.zones[0].name == "fill-bay"
    polygons.write_text("zones:\n- name: x\n  polygon: [[1, 1], [2, 2]]\n", encoding="utf-8")
    bad = CliRunner().invoke(
        app,
        [
            "calibrate",
            "zones",
            "--camera",
            str(video),
            "--out",
            str(tmp_path / "bad.yaml"),
            "--polygons",
            str(polygons),
        ],
    )
    assert bad.exit_code == 1 and "zones[0]" in bad.output
