"""The filling-station section of the agent config: cameras, zones, scales, scanners, rules.

`StationConfig` is the required `station:` section of `StationAgentConfig` (edge_agent.config);
zone polygons come from calibration, thresholds from the tables here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.codes import ReasonCode

Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Point = tuple[Annotated[int, Field(ge=0, le=16384)], Annotated[int, Field(ge=0, le=16384)]]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=64)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationCameraConfig(_Section):
    """One camera overlooking some of the scales."""

    id: Ident
    source: str = Field(
        default="0", min_length=1, description="OpenCV source: device index, file or RTSP URL"
    )
    width: int = Field(default=1280, ge=160, le=7680, description="frame width in pixels")
    height: int = Field(default=720, ge=120, le=4320, description="frame height in pixels")
    max_fps: float = Field(default=10.0, gt=0.0, le=60.0, description="frames analysed per second")


class ZoneConfig(_Section):
    """A scale position in one camera view, as calibrated polygons in full-frame pixels."""

    id: Ident
    camera_id: Ident
    scale_id: Ident
    polygon: Polygon = Field(description="where a cylinder stands on the scale")
    operator_polygon: Polygon = Field(description="where the filler stands while filling")


class ModbusScaleDriver(_Section):
    """A scale controller speaking Modbus TCP."""

    kind: Literal["modbus"] = "modbus"
    host: str = Field(default="127.0.0.1", min_length=1, description="scale controller address")
    port: int = Field(default=502, ge=1, le=65535, description="Modbus TCP port")
    unit_id: int = Field(default=1, ge=0, le=247, description="Modbus device id")
    weight_register: int = Field(
        default=0,
        ge=0,
        le=65534,
        description="first of two holding registers: gross mass in grams, unsigned 32-bit, high word first",
    )
    valve_register: int = Field(
        default=2, ge=0, le=65535, description="holding register: 1 while the filling valve is open"
    )
    fill_enable_coil: int = Field(default=0, ge=0, le=65535, description="coil the agent writes")
    timeout_s: float = Field(default=1.0, gt=0.0, le=30.0, description="per-request timeout")


class LineScaleDriver(_Section):
    """A scale that prints `<grams> <valve 0|1>` lines over TCP and accepts `EN 0|1` commands."""

    kind: Literal["line"] = "line"
    host: str = Field(default="127.0.0.1", min_length=1, description="scale address")
    port: int = Field(ge=1, le=65535, description="TCP port the scale prints its lines on")
    timeout_s: float = Field(default=1.0, gt=0.0, le=30.0, description="read timeout")


class SimScaleDriver(_Section):
    """The simulator's in-process scale (tests and demos)."""

    kind: Literal["sim"] = "sim"


class ScaleConfig(_Section):
    """One filling scale and the controller behind it."""

    id: Ident
    driver: ModbusScaleDriver | LineScaleDriver | SimScaleDriver = Field(discriminator="kind")
    poll_interval_s: float = Field(
        default=0.2, ge=0.02, le=5.0, description="how often weight and valve are read"
    )


class ScannerConfig(_Section):
    """The code scanner at one scale."""

    scale_id: Ident
    kind: Literal["tcp", "serial", "wedge", "sim"] = "tcp"
    address: str = Field(
        default="127.0.0.1:9100",
        min_length=1,
        description="host:port for tcp, a device path for serial; ignored for wedge and sim",
    )
    baudrate: int = Field(default=9600, ge=1200, le=921600, description="serial only")
    max_code_len: int = Field(default=128, ge=4, le=128, description="longer lines are refused")


class VisionConfig(_Section):
    """Zone analysis: background difference for presence, QR reading for codes."""

    process_scale: float = Field(
        default=0.25,
        gt=0.05,
        le=1.0,
        description="downscale factor for presence and person analysis",
    )
    diff_threshold: int = Field(
        default=30, ge=1, le=255, description="grey-level difference that marks a pixel as changed"
    )
    presence_min_fraction: float = Field(
        default=0.2,
        gt=0.0,
        le=1.0,
        description="changed fraction of a zone that means a cylinder is there",
    )
    person_min_fraction: float = Field(
        default=0.15,
        gt=0.0,
        le=1.0,
        description="changed fraction of an operator area that means a person is there",
    )
    background_alpha: float = Field(
        default=0.02, ge=0.0, le=1.0, description="learning rate of the background in empty areas"
    )
    qr_every_n_frames: int = Field(
        default=3,
        ge=1,
        le=100,
        description="a present zone is searched for a QR code every n frames",
    )
    person_method: Literal["occupancy", "pose"] = Field(
        default="occupancy",
        description="occupancy: background change in the operator area; pose: mediapipe pose_detection on the operator area",
    )
    person_model: Path | None = Field(
        default=None, description="pose_detection.onnx (needed when person_method is pose)"
    )
    person_score_threshold: float = Field(
        default=0.5, ge=0.05, le=0.99, description="pose detector score (mediapipe's default 0.5)"
    )
    person_nms_iou: float = Field(
        default=0.3, ge=0.05, le=0.95, description="pose detector NMS overlap (mediapipe's 0.3)"
    )
    person_every_n_frames: int = Field(
        default=5,
        ge=1,
        le=100,
        description="the pose detector runs on each operator area every n frames",
    )
    station_pack: Path | None = Field(
        default=None,
        description="station model pack folder (station.yaml); when it has a cylinder detector, "
        "zone presence comes from detections, else from the background difference",
    )
    detector_zone_cover: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="fraction of a zone covered by detected cylinder boxes that means a cylinder "
        "is there (the ground-truth rule of bench/station_real.py)",
    )
    detector_score_threshold: float | None = Field(
        default=None,
        ge=0.01,
        le=0.99,
        description="detection score for a cylinder (unset: the pack's own threshold)",
    )
    detector_every_n_frames: int = Field(
        default=1,
        ge=1,
        le=100,
        description="the detector runs on every n-th frame of a camera; its boxes hold between",
    )
    detector_threads: int = Field(
        default=1, ge=1, le=16, description="onnxruntime threads of each camera's detector"
    )
    qr_backend: Literal["auto", "zxing", "opencv"] = Field(
        default="auto", description="QR decoder: zxing-cpp, OpenCV, or zxing-cpp when installed"
    )
    qr_upscale: float = Field(
        default=3.0,
        ge=1.0,
        le=4.0,
        description="deblurring tries: the crop is upscaled by this factor first (1 = no "
        "deblurring tries)",
    )
    qr_deblur_sigmas: tuple[float, ...] = Field(
        default=(0.8, 1.1, 1.4, 1.7, 2.0, 2.4),
        max_length=16,
        description="when a crop does not decode as it is: the Gaussian blurs (sigma, camera "
        "pixels) a Wiener filter undoes in turn, a few per read (qr_deblur_per_read), "
        "resuming on the next frame; empty = no deblurring. The filter tolerates an error "
        "of about 15% in sigma, hence steps of about 20%",
    )
    qr_deblur_per_read: int = Field(
        default=2,
        ge=1,
        le=16,
        description="deblurring tries per read of a zone; the sigma that last worked on a "
        "camera is tried first",
    )
    qr_deblur_noise: float = Field(
        default=0.003,
        gt=0.0,
        le=1.0,
        description="Wiener filter noise-to-signal ratio: smaller restores more detail and "
        "more noise",
    )

    @field_validator("qr_deblur_sigmas")
    @classmethod
    def _sigmas_positive(cls, sigmas: tuple[float, ...]) -> tuple[float, ...]:
        bad = [s for s in sigmas if not 0.1 <= s <= 5.0]
        if bad:
            raise ValueError(f"qr_deblur_sigmas must lie in 0.1..5.0 camera px, got {bad}")
        return sigmas


class EvidenceConfig(_Section):
    """The camera frame attached to every flagged event (stored and uploaded like cab faces)."""

    jpeg_quality: int = Field(
        default=85,
        ge=30,
        le=100,
        description="JPEG quality of the evidence frame (OpenCV scale, 100 = best)",
    )
    max_kb: int = Field(
        default=1024,
        ge=16,
        le=5120,
        description="a larger encoded frame is not attached (logged; the event still goes); "
        "5120 is the server's default per-image limit",
    )
    frames_kept: int = Field(
        default=3,
        ge=1,
        le=30,
        description="recent frames kept per camera (references, no copies) to pick the one "
        "nearest the event",
    )
    max_frame_age_s: float = Field(
        default=2.0,
        gt=0.0,
        le=60.0,
        description="a frame further than this from the event's time is not attached "
        "(a stalled camera would show the wrong moment)",
    )


class RuleConfig(_Section):
    """Windows, tolerances and which rules are on."""

    required_certificate: str = Field(
        default="P",
        min_length=1,
        max_length=16,
        description="certificate category a filler must hold",
    )
    registry_max_age_h: float = Field(
        default=72.0,
        ge=1.0,
        le=24 * 30.0,
        description="older registry data refuses every scan (fail closed)",
    )
    scan_valid_s: float = Field(
        default=120.0,
        ge=5.0,
        le=3600.0,
        description="an accepted scan enables a fill for this long",
    )
    duplicate_window_s: float = Field(
        default=3600.0,
        ge=60.0,
        le=7 * 86400.0,
        description="one code filled twice within this is a duplicate",
    )
    overfill_tolerance_kg: float = Field(
        default=0.2, ge=0.0, le=5.0, description="net mass allowed above the type's rated fill"
    )
    filler_absent_s: float = Field(
        default=10.0,
        ge=1.0,
        le=600.0,
        description="a fill with no person at the zone this long is a violation",
    )
    cylinder_min_kg: float = Field(
        default=3.0,
        ge=0.1,
        le=100.0,
        description="gross mass above this means a cylinder is on the scale",
    )
    fill_start_delta_kg: float = Field(
        default=0.3, ge=0.05, le=10.0, description="rise over the tare that means a fill started"
    )
    fill_end_stable_s: float = Field(
        default=3.0, ge=0.5, le=120.0, description="no rise for this long ends a fill"
    )
    rise_epsilon_kg: float = Field(
        default=0.05, ge=0.0, le=1.0, description="weight changes below this count as stable"
    )
    swap_min_reads: int = Field(
        default=2,
        ge=1,
        le=100,
        description="camera reads of another code before SWAPPED_CODE fires",
    )
    cut_fill_on_violation: bool = Field(
        default=True, description="drop fill-enable when a rule fires during a fill"
    )
    disabled: list[str] = Field(
        default_factory=list, description="reason codes of rules switched off at this station"
    )


class StationConfig(_Section):
    """Everything station-specific; the `station:` section of a filling-station agent config."""

    station_id: Ident = Field(description="this station's id in the cylinder registry")
    cameras: list[StationCameraConfig] = Field(default_factory=list, max_length=16)
    zones: list[ZoneConfig] = Field(default_factory=list, max_length=64)
    scales: list[ScaleConfig] = Field(min_length=1, max_length=64)
    scanners: list[ScannerConfig] = Field(default_factory=list, max_length=64)
    vision: VisionConfig = VisionConfig()
    rules: RuleConfig = RuleConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    registry_path: Path = Field(
        default=Path("station_registry.json"), description="local cache of the cylinder registry"
    )
    queue_size: int = Field(default=64, ge=4, le=4096, description="bound of the worker queues")
    login_pattern: str = Field(
        default=r"^OP:(?P<id>[A-Za-z0-9._-]{1,64})$",
        min_length=1,
        description="a scanned code matching this is a filler's badge (operator login at that "
        "scale), not a cylinder; the named group 'id' is the operator id",
    )
    status_interval_s: float = Field(
        default=5.0, ge=0.5, le=600.0, description="how often station_status.json is rewritten"
    )

    @model_validator(mode="after")
    def _consistent(self) -> StationConfig:
        if self.vision.person_method == "pose" and self.vision.person_model is None:
            raise ValueError("vision.person_model is required when vision.person_method is pose")
        cameras = {c.id for c in self.cameras}
        scales = [s.id for s in self.scales]
        if len(set(scales)) != len(scales):
            raise ValueError("scales: ids must be unique")
        if len(cameras) != len(self.cameras):
            raise ValueError("cameras: ids must be unique")
        zone_ids = [z.id for z in self.zones]
        if len(set(zone_ids)) != len(zone_ids):
            raise ValueError("zones: ids must be unique")
        for index, zone in enumerate(self.zones):
            if zone.camera_id not in cameras:
                raise ValueError(f"zones.{index}.camera_id {zone.camera_id!r} is not a camera")
            if zone.scale_id not in scales:
                raise ValueError(f"zones.{index}.scale_id {zone.scale_id!r} is not a scale")
        for index, scanner in enumerate(self.scanners):
            if scanner.scale_id not in scales:
                raise ValueError(f"scanners.{index}.scale_id {scanner.scale_id!r} is not a scale")
        try:
            login = re.compile(self.login_pattern)
        except re.error as err:
            raise ValueError(f"login_pattern is not a valid regex: {err}") from err
        if "id" not in login.groupindex:
            raise ValueError("login_pattern has no named group 'id'")
        for code in self.rules.disabled:
            if code not in ReasonCode.__members__:
                raise ValueError(f"rules.disabled: {code!r} is not a reason code")
        return self
