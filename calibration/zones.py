"""Camera zones: polygons drawn on a reference frame, and a check that the camera has not moved.

A zone file (YAML) holds the camera source, the reference frame's size and file name (a PNG
beside the YAML), the zones in pixel coordinates of that frame, and the drift-check settings.
A moved camera puts every zone in the wrong place, so `check_drift` matches ORB features of
a current frame against the reference, fits a homography (RANSAC) and measures how far the
zone corners move under it. Too few features to decide counts as "unverifiable", never "ok".
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

logger = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Point = tuple[float, float]

CAMERA_WARMUP_FRAMES = 5
"""Frames read and dropped before the reference: webcams settle exposure on the first few."""
ZONE_COLOURS = ((0, 200, 255), (80, 220, 80), (255, 120, 60), (200, 80, 220), (60, 60, 255))


class ZoneError(ValueError):
    """A zone file, polygon or camera source is unusable (the message names which)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Zone(_Strict):
    """One named polygon in reference-frame pixels."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    polygon: tuple[Point, ...] = Field(min_length=3, description="x, y vertices in order")
    description: str = ""

    @field_validator("polygon")
    @classmethod
    def _has_area(cls, value: tuple[Point, ...]) -> tuple[Point, ...]:
        area = cv2.contourArea(np.asarray(value, np.float32))
        if area < 1.0:
            raise ValueError("polygon encloses no area (points repeated or in a line)")
        return value


class DriftSettings(_Strict):
    """When a camera counts as moved."""

    max_shift_px: float = Field(
        default=6.0, gt=0.0, le=500.0, description="largest allowed zone-corner movement, px"
    )
    min_inliers: int = Field(
        default=25, ge=8, le=10_000, description="homography inliers needed to decide at all"
    )
    orb_features: int = Field(default=1500, ge=100, le=20_000, description="ORB keypoints")
    ratio: float = Field(
        default=0.75, gt=0.0, lt=1.0, description="Lowe ratio test for descriptor matches"
    )
    ransac_px: float = Field(
        default=3.0, gt=0.0, le=50.0, description="RANSAC reprojection tolerance, px"
    )


class ZoneFile(_Strict):
    """Everything `jifang calibrate zones` writes, read back by the agent and `check-drift`."""

    format: Literal[1] = 1
    camera: str = Field(min_length=1, description="camera index, rtsp:// URL, video or image")
    frame_width: int = Field(ge=16, le=16_384)
    frame_height: int = Field(ge=16, le=16_384)
    reference_frame: str = Field(min_length=1, description="PNG beside this file")
    created: datetime | None = None
    zones: tuple[Zone, ...] = Field(min_length=1)
    drift: DriftSettings = DriftSettings()

    @model_validator(mode="after")
    def _consistent(self) -> ZoneFile:
        names = [z.name for z in self.zones]
        for name in {n for n in names if names.count(n) > 1}:
            raise ValueError(f"zone {name!r} is listed twice")
        for zone in self.zones:
            for x, y in zone.polygon:
                if not (0 <= x <= self.frame_width and 0 <= y <= self.frame_height):
                    raise ValueError(
                        f"zone {zone.name!r}: point ({x:g}, {y:g}) is outside the "
                        f"{self.frame_width}x{self.frame_height} frame"
                    )
        return self


def _errors(where: str, err: ValidationError) -> ZoneError:
    parts = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
    )
    return ZoneError(f"{where}: {parts}")


def make_zone_file(
    camera: str, frame: Image, reference_name: str, zones: list[Zone], drift: DriftSettings
) -> ZoneFile:
    """Validate zones against the reference frame they were drawn on."""
    try:
        return ZoneFile(
            camera=camera,
            frame_width=frame.shape[1],
            frame_height=frame.shape[0],
            reference_frame=reference_name,
            created=datetime.now(UTC).replace(microsecond=0),
            zones=tuple(zones),
            drift=drift,
        )
    except ValidationError as err:
        raise _errors("zones", err) from err


def load_zones(path: Path) -> ZoneFile:
    """Read and validate a zone file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ZoneError(f"{path}: cannot read ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ZoneError(f"{path}: not valid YAML ({err})") from err
    try:
        return ZoneFile.model_validate(raw)
    except ValidationError as err:
        raise _errors(str(path), err) from err


def save_zones(path: Path, zone_file: ZoneFile) -> Path:
    """Write the zone file atomically."""
    data = zone_file.model_dump(mode="json")
    data["zones"] = [{**z, "polygon": [list(p) for p in z["polygon"]]} for z in data["zones"]]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path


def parse_zone_arg(text: str) -> Zone:
    """`name:x,y;x,y;x,y` (as typed on the command line) -> Zone."""
    name, sep, points = text.partition(":")
    if not sep:
        raise ZoneError(f"zone {text!r}: expected NAME:x,y;x,y;x,y")
    try:
        polygon = tuple(
            (float(x), float(y)) for x, y in (p.split(",") for p in points.split(";") if p.strip())
        )
    except ValueError as err:
        raise ZoneError(f"zone {name!r}: points must be x,y pairs separated by ';'") from err
    return _zone({"name": name.strip(), "polygon": polygon}, f"zone {name.strip()!r}")


def _zone(raw: Any, where: str) -> Zone:
    try:
        return Zone.model_validate(raw)
    except ValidationError as err:
        raise _errors(where, err) from err


def load_polygons(path: Path) -> list[Zone]:
    """Zones from a YAML/JSON file: a list of {name, polygon}, or {zones: [...]}."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ZoneError(f"{path}: cannot read polygons ({err})") from err
    items = raw.get("zones") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise ZoneError(f"{path}: expected a list of zones with name and polygon")
    return [_zone(item, f"{path}: zones[{i}]") for i, item in enumerate(items)]


def _is_image_file(source: str) -> bool:
    return Path(source).suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def grab_frame(source: str) -> Image:
    """One frame from a camera index, stream URL, video file or still image."""
    if _is_image_file(source):
        frame = cv2.imread(source, cv2.IMREAD_COLOR)
        if frame is None:
            raise ZoneError(f"camera {source}: cannot read the image")
        return np.asarray(frame, np.uint8)
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    try:
        if not capture.isOpened():
            raise ZoneError(f"camera {source}: cannot open")
        frame = None
        for _ in range(CAMERA_WARMUP_FRAMES):
            ok, grabbed = capture.read()
            if not ok:
                break
            frame = grabbed
        if frame is None:
            raise ZoneError(f"camera {source}: opened but gave no frame")
        return np.asarray(frame, np.uint8)
    finally:
        capture.release()


def render_overlay(frame: Image, zones: tuple[Zone, ...] | list[Zone]) -> Image:
    """The frame with each zone filled translucently, outlined and named."""
    fill = frame.copy()
    for i, zone in enumerate(zones):
        pts = np.round(np.asarray(zone.polygon)).astype(np.int32)
        cv2.fillPoly(fill, [pts], ZONE_COLOURS[i % len(ZONE_COLOURS)])
    out = np.asarray(cv2.addWeighted(fill, 0.3, frame, 0.7, 0.0), np.uint8)
    for i, zone in enumerate(zones):
        colour = ZONE_COLOURS[i % len(ZONE_COLOURS)]
        pts = np.round(np.asarray(zone.polygon)).astype(np.int32)
        cv2.polylines(out, [pts], True, colour, 2)
        x, y = pts.min(axis=0)
        cv2.putText(
            out, zone.name, (int(x) + 4, int(y) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2
        )
    return np.asarray(out, np.uint8)


def has_display() -> bool:
    """Whether an OpenCV window can be shown (an X11/Wayland display on Linux)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def draw_zones_interactive(frame: Image, names: list[str]) -> list[Zone]:
    """Let a person click each zone's corners in an OpenCV window.

    Left click adds a corner, Backspace removes the last, Enter closes the zone (named from
    `names` in order, else zone1, zone2...), Esc finishes.
    """
    window = "jifang zones: click corners, Enter = close zone, Backspace = undo, Esc = done"
    zones: list[Zone] = []
    points: list[Point] = []

    def on_mouse(event: int, x: int, y: int, flags: int, param: object) -> None:
        if event == cv2.EVENT_LBUTTONDOWN:
            points.append((float(x), float(y)))

    cv2.namedWindow(window, cv2.WINDOW_AUTOSIZE)
    cv2.setMouseCallback(window, on_mouse)
    try:
        while True:
            view = render_overlay(frame, zones)
            for p in points:
                cv2.circle(view, (int(p[0]), int(p[1])), 4, (0, 0, 255), -1)
            if len(points) > 1:
                cv2.polylines(view, [np.asarray(points, np.int32)], False, (0, 0, 255), 1)
            cv2.imshow(window, view)
            key = cv2.waitKey(30) & 0xFF
            if key == 27:
                break
            if key in (8, 127) and points:
                points.pop()
            if key in (10, 13) and len(points) >= 3:
                name = names[len(zones)] if len(zones) < len(names) else f"zone{len(zones) + 1}"
                try:
                    zones.append(Zone(name=name, polygon=tuple(points)))
                except ValidationError as err:
                    logger.warning("zone %s not kept: %s", name, err)
                points.clear()
    finally:
        cv2.destroyWindow(window)
    return zones


class DriftStatus(StrEnum):
    """Outcome of a drift check."""

    OK = "ok"
    MOVED = "moved"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class DriftResult:
    """How far the zones moved between the reference frame and a current one."""

    status: DriftStatus
    shift_px: float | None
    """Largest movement of a zone corner under the fitted homography."""
    matches: int
    inliers: int
    reason: str
    homography: npt.NDArray[np.float64] | None = None


def _gray(image: Image) -> Image:
    return image if image.ndim == 2 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


def check_drift(
    reference: Image, current: Image, zones: tuple[Zone, ...], settings: DriftSettings
) -> DriftResult:
    """Match ORB features current->reference and measure zone-corner movement."""
    if reference.shape[:2] != current.shape[:2]:
        return DriftResult(
            DriftStatus.UNVERIFIABLE,
            None,
            0,
            0,
            f"frame size {current.shape[1]}x{current.shape[0]} differs from the reference "
            f"{reference.shape[1]}x{reference.shape[0]}",
        )
    orb = cv2.ORB_create(nfeatures=settings.orb_features)  # type: ignore[attr-defined]
    kp_ref, des_ref = orb.detectAndCompute(_gray(reference), None)
    kp_cur, des_cur = orb.detectAndCompute(_gray(current), None)
    if des_ref is None or des_cur is None or len(kp_ref) < 2 or len(kp_cur) < 2:
        return DriftResult(DriftStatus.UNVERIFIABLE, None, 0, 0, "no features to match")
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des_ref, des_cur, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < settings.ratio * p[1].distance]
    if len(good) < settings.min_inliers:
        return DriftResult(
            DriftStatus.UNVERIFIABLE,
            None,
            len(good),
            0,
            f"{len(good)} feature matches, {settings.min_inliers} needed",
        )
    src = np.asarray([kp_ref[m.queryIdx].pt for m in good], np.float32).reshape(-1, 1, 2)
    dst = np.asarray([kp_cur[m.trainIdx].pt for m in good], np.float32).reshape(-1, 1, 2)
    homography, mask = cv2.findHomography(src, dst, cv2.RANSAC, settings.ransac_px)
    inliers = int(mask.sum()) if mask is not None else 0
    if homography is None or inliers < settings.min_inliers:
        return DriftResult(
            DriftStatus.UNVERIFIABLE,
            None,
            len(good),
            inliers,
            f"{inliers} homography inliers, {settings.min_inliers} needed",
        )
    corners = np.asarray([p for z in zones for p in z.polygon], np.float32).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(corners, homography).reshape(-1, 2)
    shift = float(np.max(np.linalg.norm(moved - corners.reshape(-1, 2), axis=1)))
    status = DriftStatus.MOVED if shift > settings.max_shift_px else DriftStatus.OK
    return DriftResult(
        status,
        shift,
        len(good),
        inliers,
        f"zone corners move up to {shift:.1f} px (limit {settings.max_shift_px:g})",
        np.asarray(homography, np.float64),
    )


def render_drift(current: Image, zones: tuple[Zone, ...], result: DriftResult) -> Image:
    """The current frame with the stored zones, and where they now fall when moved."""
    out = render_overlay(current, zones)
    if result.homography is not None and result.status == DriftStatus.MOVED:
        for zone in zones:
            pts = np.asarray(zone.polygon, np.float32).reshape(-1, 1, 2)
            warped = cv2.perspectiveTransform(pts, result.homography).reshape(-1, 2)
            cv2.polylines(out, [np.round(warped).astype(np.int32)], True, (0, 0, 255), 2)
    cv2.putText(
        out,
        f"{result.status.value}: {result.reason}",
        (8, 24),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (0, 0, 255),
        2,
    )
    return np.asarray(out, np.uint8)
