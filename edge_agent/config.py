"""Configuration of both edge agents, loaded from YAML with env placeholders.

`AgentConfig` is `CabAgentConfig | StationAgentConfig`, chosen by `device.kind`; both share
`AgentConfigBase` (device, server, store). A section of the other agent is refused by name.

Secrets never sit in the YAML file itself: write `${JIFANG_DEVICE_KEY}` (or
`${NAME:-default}`) and the value is taken from the environment when the file is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from contract.codes import DeviceKind
from edge_agent.station.config import StationConfig
from models.liveness.config import LivenessPolicyConfig
from models.matching import DEFAULT_MIN_MARGIN

_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(Exception):
    """A config file could not be used; `errors` holds (field path, message) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {message}" for path, message in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSection(_Section):
    """Which device this agent runs on."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    kind: DeviceKind
    site_id: str = Field(min_length=1, max_length=64)
    timezone: str = Field(
        default="Asia/Shanghai",
        min_length=1,
        description="IANA zone whose calendar date decides certificate validity",
    )

    @model_validator(mode="after")
    def _known_zone(self) -> DeviceSection:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown timezone {self.timezone!r}") from err
        return self

    def zone(self) -> ZoneInfo:
        """The device's time zone (validated at load)."""
        return ZoneInfo(self.timezone)


class ServerSection(_Section):
    """How the agent reaches the central server."""

    url: str = Field(pattern=r"^https?://", description="base URL of the jifang server")
    device_key: SecretStr = Field(description="per-device signing key; use an env placeholder")
    timeout_s: float = Field(default=10.0, ge=0.5, le=120.0, description="HTTP timeout")
    sync_interval_s: float = Field(
        default=60.0, ge=5.0, le=3600.0, description="how often gallery and config are synced"
    )
    public_key: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9+/]{43}=)?$",
        description="server Ed25519 public key (base64 raw 32 bytes) received at registration; "
        "without it no gallery can be verified, so the gate stays closed",
    )
    batch_size: int = Field(default=100, ge=1, le=1000, description="events per delivery request")
    heartbeat_interval_s: float = Field(
        default=60.0, ge=5.0, le=3600.0, description="how often a Heartbeat is sent"
    )


class ModelsSection(_Section):
    """Which model pack and calibration the agent uses."""

    dir: Path = Field(default=Path("model_packs"), description="folder holding model packs")
    pack: str = Field(default="jifang-open", min_length=1, description="pack folder name")
    calibration: str = Field(
        default="default", min_length=1, description="named calibration in the pack to use"
    )
    threads: int = Field(default=2, ge=1, le=64, description="onnxruntime intra-op threads")


class CameraSection(_Section):
    """Where frames come from: a V4L2 index, an RTSP URL, a video file or an image folder."""

    source: str | int = Field(description="camera index, rtsp:// URL, video file or folder")
    width: int = Field(
        default=640, ge=160, le=4096, description="capture width requested from the camera, px"
    )
    height: int = Field(
        default=480, ge=120, le=4096, description="capture height requested from the camera, px"
    )
    fps: float = Field(
        default=15.0, gt=0.0, le=120.0, description="frames read per second (capture rate cap)"
    )
    reconnect_initial_s: float = Field(
        default=0.5, ge=0.05, le=60.0, description="first reconnect delay; doubles each try"
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=0.1, le=600.0, description="longest reconnect delay the doubling reaches"
    )
    lost_after_s: float = Field(
        default=5.0, ge=0.5, le=300.0, description="no frame for this long means CAMERA_LOST"
    )
    queue_size: int = Field(default=4, ge=1, le=256, description="frames buffered; older dropped")


class QualitySection(_Section):
    """Per-frame quality gates applied before matching."""

    min_face_px: int = Field(default=80, ge=20, le=2000, description="min inter-box side, px")
    min_sharpness: float = Field(
        default=0.3, ge=0.0, le=1.0, description="normalised Laplacian-variance score"
    )
    max_yaw_deg: float = Field(
        default=30.0,
        ge=0.0,
        le=90.0,
        description="faces turned further left/right are skipped, deg",
    )
    max_pitch_deg: float = Field(
        default=25.0, ge=0.0, le=90.0, description="faces tilted further up/down are skipped, deg"
    )
    min_exposure: float = Field(
        default=0.3, ge=0.0, le=1.0, description="score: 0 = black/blown-out, 1 = well exposed"
    )


class GateSection(_Section):
    """How the cab gate decides."""

    start_trigger: Literal["ignition", "seat", "presence"] = "ignition"
    frames_required: int = Field(default=3, ge=1, le=30, description="good frames to decide on")
    window_s: float = Field(default=4.0, ge=0.5, le=60.0, description="time to collect them")
    match_threshold: float | None = Field(
        default=None,
        ge=-1000.0,
        le=1000.0,
        description="threshold on the scale of the calibration's score (cosine: -1..1; "
        "as_norm: normalised units); None = the calibrated value for models.calibration",
    )
    min_margin: float = Field(
        default=DEFAULT_MIN_MARGIN,
        ge=0.0,
        le=1.0,
        description="1:N: best minus second-best score (in the calibration's units)",
    )
    max_gallery_age_s: int = Field(
        default=86_400, ge=60, le=30 * 86_400, description="older gallery = GALLERY_STALE"
    )
    reverify_interval_s: float = Field(
        default=300.0,
        ge=10.0,
        le=86_400.0,
        description="while the engine runs, the operator is re-verified this often",
    )
    absence_timeout_s: float = Field(
        default=60.0,
        ge=1.0,
        le=3600.0,
        description="no face at re-verification for this long raises OPERATOR_ABSENT and the "
        "alarm (the engine is never cut)",
    )
    max_clock_skew_s: float = Field(
        default=300.0,
        ge=1.0,
        le=86_400.0,
        description="skew vs server beyond which clock is untrusted",
    )
    clock_not_before: date = Field(
        default=date(2025, 1, 1),
        description="a local date before this means the real-time clock was reset: untrusted",
    )
    target_fmr: float = Field(
        default=1e-3,
        gt=0.0,
        lt=1.0,
        description="false-match rate per comparison the site requires; the named calibration "
        "must be made for it and its impostor pair count must support it",
    )
    authorized_hold_s: float = Field(
        default=60.0,
        ge=5.0,
        le=3600.0,
        description="an authorization not followed by engine start within this lapses to LOCKED",
    )
    presence_retry_s: float = Field(
        default=10.0,
        ge=1.0,
        le=600.0,
        description="start_trigger=presence: wait this long after a denial before trying again",
    )
    reverify_attempt_s: float = Field(
        default=10.0,
        ge=1.0,
        le=600.0,
        description="how long one re-verification looks for the operator's face",
    )


class ClaimsSection(_Section):
    """Identity claims (certificate QR, IC card, employee number) and the 1:N risk bound."""

    max_1n_risk: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="1:N without a claim only while calibrated FMR x templates in the gallery "
        "(every template is a chance of a false match) stays at or below this; otherwise a "
        "claim is required (0 = always require one)",
    )
    claim_valid_s: float = Field(
        default=60.0,
        ge=5.0,
        le=600.0,
        description="a claim not used by a start request within this is discarded, so the "
        "next person cannot ride on it",
    )
    cert_qr_pattern: str = Field(
        default=r"(?:^|[?&]cert(?:ificate)?_?no=)(?P<no>[A-Za-z0-9-]{4,64})(?:$|&)",
        min_length=1,
        description="regex with a group 'no' that extracts the certificate number from the "
        "QR text of an electronic certificate",
    )


class LivenessSection(LivenessPolicyConfig):
    """The presentation-attack policy: the sequence checks of `models.liveness`, or none.

    Every field of `LivenessPolicyConfig` (require_passive, require_temporal, active,
    passive, temporal, challenge) sits directly in this section.
    """

    policy: Literal["sequence", "none"] = Field(
        default="sequence",
        description="'sequence': passive + temporal on the window's frames, with the "
        "challenge-response as `active` says; 'none': NO presentation-attack detection, a "
        "printed photo is accepted (logged loudly at start; never in production)",
    )
    prompt_languages: tuple[str, ...] = Field(
        default=("zh-CN", "en"),
        min_length=1,
        description="languages the challenge prompt is shown and spoken in, in order",
    )
    challenge_poll_s: float = Field(
        default=0.25,
        ge=0.01,
        le=5.0,
        description="longest wait for one frame while a challenge runs (the step timeout "
        "itself is challenge.step_timeout_s, on the frame clock)",
    )
    observe_s: float = Field(
        default=1.5,
        ge=0.1,
        le=30.0,
        description="longest the gate keeps observing a start (from its first usable frame) "
        "for the policy to find it live without a challenge; then it judges in full, asking "
        "for the challenge when the passive score is in doubt (the window still ends at "
        "gate.window_s)",
    )

    def policy_config(self) -> LivenessPolicyConfig:
        """The `models.liveness` policy this section describes (disabled for 'none')."""
        values = self.model_dump(
            exclude={"policy", "prompt_languages", "challenge_poll_s", "observe_s"}
        )
        values["enabled"] = self.enabled and self.policy == "sequence"
        return LivenessPolicyConfig.model_validate(values)

    @property
    def active_checks(self) -> bool:
        """True when some presentation-attack check runs."""
        return self.policy == "sequence" and self.enabled


class OverrideSection(_Section):
    """One-time emergency override codes (HMAC with the device key, with expiry)."""

    enabled: bool = True
    max_validity_s: int = Field(
        default=24 * 3600,
        ge=60,
        le=7 * 86_400,
        description="a code whose expiry lies further ahead than this is refused",
    )


class InterlockSection(_Section):
    """The start-enable output."""

    driver: Literal["simulated", "gpiod", "modbus", "can"] = "simulated"
    target: str = Field(
        default="",
        description="gpiod: /dev/gpiochipN; modbus: host:port; can: channel (e.g. can0); "
        "simulated: state file (empty = <store.dir>/interlock.json)",
    )
    enable_address: int = Field(
        default=0, ge=0, le=65535, description="GPIO line offset or Modbus coil of start-enable"
    )
    alarm_address: int = Field(
        default=1, ge=0, le=65535, description="GPIO line offset or Modbus coil of the alarm"
    )
    modbus_unit: int = Field(default=1, ge=0, le=247, description="Modbus device (unit) id")
    can_interface: str = Field(
        default="socketcan", min_length=1, description="python-can interface name"
    )
    can_id: int = Field(
        default=0x18F, ge=0, le=0x1FFFFFFF, description="arbitration id of the state frame"
    )
    watchdog_s: float = Field(
        default=2.0, ge=0.1, le=60.0, description="drop enable if no heartbeat for this long"
    )
    heartbeat_s: float = Field(
        default=0.5, ge=0.05, le=30.0, description="how often the agent proves it is alive"
    )


class InputsSection(_Section):
    """Where the start request (ignition key / seat switch) and engine-running signals come from."""

    source: Literal["local_api", "modbus"] = Field(
        default="local_api",
        description="local_api: POST /input/start and /input/engine on the status endpoint; "
        "modbus: two discrete inputs of a PLC or I/O module",
    )
    target: str = Field(default="", description="modbus: host:port")
    modbus_unit: int = Field(default=1, ge=0, le=247, description="Modbus device (unit) id")
    start_input: int = Field(
        default=0, ge=0, le=65535, description="discrete input: key/seat; rising edge = start"
    )
    engine_input: int = Field(
        default=1, ge=0, le=65535, description="discrete input: engine running"
    )
    poll_s: float = Field(default=0.1, ge=0.01, le=5.0, description="input polling period")


class StoreSection(_Section):
    """Local state: gallery cache, event outbox, evidence."""

    dir: Path = Field(default=Path("var/edge"), description="folder for the local SQLite files")
    evidence_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="evidence images not acknowledged by the server are deleted after this",
    )
    evidence_max_mb: int = Field(
        default=2048,
        ge=16,
        le=1_000_000,
        description="evidence folder size cap, MiB; the oldest images go first beyond it",
    )
    retry_initial_s: float = Field(
        default=1.0,
        ge=0.05,
        le=600.0,
        description="first delivery retry delay (doubles per failure); also the idle poll period",
    )
    retry_max_s: float = Field(
        default=300.0, ge=1.0, le=86_400.0, description="longest delivery retry delay"
    )
    delivered_keep_days: int = Field(
        default=7, ge=0, le=3650, description="delivered events are purged after this"
    )

    @property
    def evidence_dir(self) -> Path:
        """Where evidence images wait for upload (content-addressed, pruned by the limits)."""
        return self.dir / "evidence"


class StatusSection(_Section):
    """The local status and metrics endpoint."""

    host: str = Field(default="127.0.0.1", description="address the endpoint binds to")
    port: int = Field(
        default=8765, ge=0, le=65535, description="TCP port of the endpoint (0 = any free port)"
    )


class CabStoreSection(StoreSection):
    """Local state of a cab: the shared store plus the signed gallery chain."""

    max_gallery_deltas: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="signed deltas kept on top of the snapshot before a full snapshot is fetched",
    )


class AgentConfigBase(_Section):
    """What both agents read: who the device is, how it reaches the server, its local store."""

    device: DeviceSection
    server: ServerSection
    store: StoreSection = StoreSection()

    @model_validator(mode="after")
    def _store_retry(self) -> AgentConfigBase:
        if self.store.retry_max_s < self.store.retry_initial_s:
            raise ValueError("store.retry_max_s is smaller than store.retry_initial_s")
        return self


_CAB_KINDS = frozenset({DeviceKind.CRANE, DeviceKind.FORKLIFT})


class CabAgentConfig(AgentConfigBase):
    """The cab agent (crane, forklift): camera, face gate, interlock, claims, liveness."""

    store: CabStoreSection = CabStoreSection()
    models: ModelsSection = ModelsSection()
    camera: CameraSection
    quality: QualitySection = QualitySection()
    gate: GateSection = GateSection()
    interlock: InterlockSection = InterlockSection()
    inputs: InputsSection = InputsSection()
    status: StatusSection = StatusSection()
    claims: ClaimsSection = ClaimsSection()
    liveness: LivenessSection = LivenessSection()
    override: OverrideSection = OverrideSection()

    @model_validator(mode="after")
    def _consistent(self) -> CabAgentConfig:
        if self.device.kind not in _CAB_KINDS:
            raise ValueError(f"device.kind {self.device.kind.value} is not a cab (crane, forklift)")
        if self.camera.reconnect_max_s < self.camera.reconnect_initial_s:
            raise ValueError("camera.reconnect_max_s is smaller than camera.reconnect_initial_s")
        if self.interlock.driver != "simulated" and not self.interlock.target:
            raise ValueError(f"interlock.target is required for the {self.interlock.driver} driver")
        if self.inputs.source == "modbus" and not re.fullmatch(r".+:\d+", self.inputs.target):
            raise ValueError("inputs.target must be host:port when inputs.source is modbus")
        if self.interlock.watchdog_s <= self.interlock.heartbeat_s:
            raise ValueError("interlock.watchdog_s must be longer than interlock.heartbeat_s")
        return self

    @model_validator(mode="after")
    def _qr_pattern(self) -> CabAgentConfig:
        try:
            pattern = re.compile(self.claims.cert_qr_pattern)
        except re.error as err:
            raise ValueError(f"claims.cert_qr_pattern is not a valid regex: {err}") from err
        if "no" not in pattern.groupindex:
            raise ValueError("claims.cert_qr_pattern has no named group 'no'")
        return self


class StationAgentConfig(AgentConfigBase):
    """The filling-station agent: the shared sections plus `station:`; no cab sections."""

    station: StationConfig = Field(description="cameras, zones, scales, scanners and rules")

    @model_validator(mode="after")
    def _is_station(self) -> StationAgentConfig:
        if self.device.kind != DeviceKind.FILLING_STATION:
            raise ValueError(f"device.kind {self.device.kind.value} is not a filling_station")
        return self


_KIND_ERROR = "device_kind"


def _agent_tag(data: Any) -> str | None:
    """'cab' or 'station' from device.kind; None (a device.kind error) when missing or unknown."""
    if isinstance(data, AgentConfigBase):
        kind: Any = data.device.kind
    elif isinstance(data, dict):
        device = data.get("device")
        kind = device.get("kind") if isinstance(device, dict) else None
    else:
        return None
    try:
        parsed = DeviceKind(kind)
    except ValueError:
        return None
    return "station" if parsed == DeviceKind.FILLING_STATION else "cab"


AgentConfig = Annotated[
    Annotated[CabAgentConfig, Tag("cab")] | Annotated[StationAgentConfig, Tag("station")],
    Discriminator(
        _agent_tag,
        custom_error_type=_KIND_ERROR,
        custom_error_message="device.kind must be one of "
        + ", ".join(k.value for k in DeviceKind)
        + " (it decides between the cab and the station config)",
    ),
]
"""The agent config: `CabAgentConfig` or `StationAgentConfig`, chosen by `device.kind`."""

_AGENT_CONFIG: TypeAdapter[CabAgentConfig | StationAgentConfig] = TypeAdapter(AgentConfig)
_TAGS = frozenset({"cab", "station"})


def _substitute(node: Any, path: str, env: Mapping[str, str], errors: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, errors)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, f"{path}.{i}", env, errors) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append((path, f"environment variable {name} is not set"))
            return ""

        return _PLACEHOLDER.sub(repl, node)
    return node


def _error(error: ErrorDetails) -> tuple[str, str]:
    """(field path, message) of one error; the union tag is dropped from the path."""
    if error["type"] == _KIND_ERROR:
        return "device.kind", error["msg"]
    loc = error["loc"]
    tag = loc[0] if loc and loc[0] in _TAGS else None
    if tag is not None:
        loc = loc[1:]
    path = ".".join(str(part) for part in loc) or "(root)"
    if error["type"] == "extra_forbidden" and len(loc) == 1:
        # A whole section of the other agent: say so, rather than only "extra input".
        if tag == "station" and loc[0] in CabAgentConfig.model_fields:
            return path, "a cab section; not allowed when device.kind is filling_station"
        if tag == "cab" and loc[0] in StationAgentConfig.model_fields:
            return path, "a filling-station section; not allowed on a crane or forklift"
    return path, error["msg"]


def parse_config(
    data: Any, source: str = "<config>", env: Mapping[str, str] | None = None
) -> CabAgentConfig | StationAgentConfig:
    """Validate an already-parsed YAML tree; raise ConfigError listing every bad field."""
    errors: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [("(root)", "the file must hold a mapping of sections")])
    resolved = _substitute(data, "", os.environ if env is None else env, errors)
    if errors:
        raise ConfigError(source, errors)
    try:
        return _AGENT_CONFIG.validate_python(resolved)
    except ValidationError as err:
        raise ConfigError(source, [_error(e) for e in err.errors()]) from err


def parse_cab_config(
    data: Any, source: str = "<config>", env: Mapping[str, str] | None = None
) -> CabAgentConfig:
    """`parse_config` for callers that build a cab (demo, bench): a station config is refused."""
    config = parse_config(data, source, env)
    if not isinstance(config, CabAgentConfig):
        raise ConfigError(source, [("device.kind", f"{config.device.kind.value} is not a cab")])
    return config


def load_config(
    path: Path, env: Mapping[str, str] | None = None
) -> CabAgentConfig | StationAgentConfig:
    """Read and validate an agent YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(path), [("(file)", f"cannot read: {err.strerror}")]) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(path), [(where, f"not valid YAML: {err}")]) from err
    return parse_config(data, str(path), env)
