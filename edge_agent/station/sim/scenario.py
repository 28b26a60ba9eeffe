"""Scripted scenarios: what happens at which scale and when, and the station layout they run on."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.station.config import (
    ScaleConfig,
    ScannerConfig,
    SimScaleDriver,
    StationCameraConfig,
    StationConfig,
    ZoneConfig,
)


@dataclass(frozen=True)
class Place:
    """A cylinder is put on a scale; `label_code` is what its QR label says."""

    at: float
    scale_id: str
    label_code: str
    tare_kg: float = 15.0


@dataclass(frozen=True)
class Remove:
    """The cylinder is taken off the scale."""

    at: float
    scale_id: str


@dataclass(frozen=True)
class Scan:
    """The filler scans a code at the scale's scanner."""

    at: float
    scale_id: str
    code: str


@dataclass(frozen=True)
class Login:
    """A filler identifies at the scale."""

    at: float
    scale_id: str
    operator_id: str


@dataclass(frozen=True)
class Person:
    """The filler steps up to (or away from) the scale."""

    at: float
    scale_id: str
    present: bool


@dataclass(frozen=True)
class OpenValve:
    """The filler opens the filling gun; gas flows while fill-enable is on (or bypassed)."""

    at: float
    scale_id: str
    target_net_kg: float
    bypass: bool = False
    rate_kg_s: float = 1.0


Action = Place | Remove | Scan | Login | Person | OpenValve


@dataclass(frozen=True)
class Scenario:
    """A scripted shift segment."""

    name: str
    duration_s: float
    actions: tuple[Action, ...]
    tick_s: float = 0.5


@dataclass(frozen=True)
class CellGeometry:
    """Where one scale sits in its camera's frame."""

    scale_id: str
    camera_id: str
    zone: tuple[int, int, int, int]  # x0, y0, x1, y1
    operator: tuple[int, int, int, int]


@dataclass(frozen=True)
class SimLayout:
    """Cameras and scales of a simulated station, as a grid of cells per camera."""

    width: int
    height: int
    cells: tuple[CellGeometry, ...]
    camera_ids: tuple[str, ...] = field(default=())

    def cell(self, scale_id: str) -> CellGeometry:
        """The cell of one scale."""
        return next(c for c in self.cells if c.scale_id == scale_id)


def make_layout(
    cameras: int = 1, zones_per_camera: int = 4, width: int = 1280, height: int = 720
) -> SimLayout:
    """A grid layout: up to 4 cells per row; each cell is an operator area left of a scale."""
    if not 1 <= zones_per_camera <= 16:
        raise ValueError(f"zones_per_camera must be 1..16, got {zones_per_camera}")
    cols = min(4, zones_per_camera)
    rows = -(-zones_per_camera // cols)
    cw, ch = width // cols, height // rows
    cells = []
    for cam in range(cameras):
        camera_id = f"cam{cam + 1}"
        for index in range(zones_per_camera):
            r, c = divmod(index, cols)
            x, y = c * cw, r * ch
            split = x + int(cw * 0.36)
            zone = (split + 4, y + int(ch * 0.04), x + cw - 6, y + ch - 6)
            operator = (x + 6, y + int(ch * 0.04), split - 4, y + ch - 6)
            cells.append(CellGeometry(f"S{cam + 1}{index + 1:02d}", camera_id, zone, operator))
    return SimLayout(width, height, tuple(cells), tuple(f"cam{i + 1}" for i in range(cameras)))


def _rect(box: tuple[int, int, int, int]) -> list[tuple[int, int]]:
    x0, y0, x1, y1 = box
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def station_config(
    layout: SimLayout, station_id: str = "ST-JN-001", **overrides: object
) -> StationConfig:
    """A StationConfig whose zones are the layout's cells, with sim scales and scanners."""
    data: dict[str, object] = {
        "station_id": station_id,
        "cameras": [
            StationCameraConfig(id=c, source="sim", width=layout.width, height=layout.height)
            for c in layout.camera_ids
        ],
        "zones": [
            ZoneConfig(
                id=f"Z-{cell.scale_id}",
                camera_id=cell.camera_id,
                scale_id=cell.scale_id,
                polygon=_rect(cell.zone),
                operator_polygon=_rect(cell.operator),
            )
            for cell in layout.cells
        ],
        "scales": [ScaleConfig(id=cell.scale_id, driver=SimScaleDriver()) for cell in layout.cells],
        "scanners": [ScannerConfig(scale_id=cell.scale_id, kind="sim") for cell in layout.cells],
    }
    data.update(overrides)
    return StationConfig.model_validate(data)
