"""Pydantic models for every message that crosses between an edge device and the server.

Both sides import this module; nothing else is shared by copy. Every top-level message carries
`schema_version`; a receiver refuses a major version it does not know.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from contract.codes import (
    CertificateStatus,
    ClaimKind,
    CodeSystem,
    CylinderStatus,
    DeviceKind,
    EventKind,
    GateState,
    LivenessCheck,
    ReasonCode,
    ScoreKind,
    Severity,
)

SCHEMA_VERSION = "1.3"
"""Current wire schema version. Minor bumps add optional fields; a major bump breaks."""
FILL_VIOLATION_IDS_SINCE = "1.3"
"""From this version on a station fill lists the violation events it broke
(`StationFillPayload.violation_ids`); the server matches older fills to their violations."""


def schema_minor(version: str) -> int:
    """The minor number of a `1.N` schema version."""
    return int(version.split(".", 1)[1])


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _is_uuid7(value: uuid.UUID) -> uuid.UUID:
    if value.version != 7:
        raise ValueError("must be a UUIDv7 (sortable by creation time)")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timestamp that must carry a timezone; it is normalised to UTC."""
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex SHA-256")]
DeviceId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
EventId = Annotated[uuid.UUID, AfterValidator(_is_uuid7)]
SchemaVersion = Annotated[
    str, Field(pattern=r"^1\.\d+$", description="wire schema version; major version 1")
]
MAX_COUNTER = 2**53 - 1
"""Bound on sequence numbers and version counters: the largest integer every JSON reader keeps
exact, inside the server's BIGINT columns, and out of reach of a real device (a thousand events
a second for 285,000 years); a larger value is refused (422), never stored."""
Counter = Annotated[int, Field(ge=0, le=MAX_COUNTER)]
"""A sequence number or version: 0 .. MAX_COUNTER."""
MAX_NORMALISED_SCORE = 1000.0
"""Bound on the magnitude of a normalised (as_norm) score or threshold on the wire."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Model):
    """Base of every top-level wire message."""

    schema_version: SchemaVersion = SCHEMA_VERSION


# --- device identity and liveness of the link ---------------------------------------------


class DeviceIdentity(Message):
    """Who a device is; sent at registration and kept by the server."""

    device_id: DeviceId
    kind: DeviceKind
    site_id: str = Field(min_length=1, max_length=64)
    serial: str = Field(default="", max_length=128)
    agent_version: str = Field(min_length=1, max_length=32)


class Heartbeat(Message):
    """Periodic device status, so the server can tell which devices went offline."""

    device_id: DeviceId
    sent_at: UtcDatetime
    agent_version: str = Field(min_length=1, max_length=32)
    state: str = Field(min_length=1, max_length=32, description="agent state, e.g. locked")
    pack_contract_id: str = Field(default="", max_length=128)
    gallery_version: Counter = 0
    outbox_depth: Counter = 0
    uptime_s: float = Field(default=0.0, ge=0.0)
    passive_pad: str | None = Field(
        default=None,
        max_length=128,
        description="cab: the passive PAD model file in use; null means no model, so doubtful "
        "starts fall back to the challenge",
    )


# --- events ---------------------------------------------------------------------------------


Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 in image pixels."""
ImagePolygon = Annotated[
    tuple[tuple[float, float], ...],
    Field(min_length=3, max_length=64, description="x, y vertices in image pixels"),
]


class EvidenceZone(_Model):
    """A calibrated station zone as drawn over a camera frame (schema 1.2)."""

    zone_id: str = Field(min_length=1, max_length=64)
    scale_id: str | None = Field(default=None, max_length=64)
    polygon: ImagePolygon = Field(description="where the cylinder stands on the scale")
    operator_polygon: ImagePolygon | None = Field(
        default=None, description="where the filler stands while filling"
    )


class EvidenceDetection(_Model):
    """A detector box in a station evidence frame (schema 1.2)."""

    label: Literal["cylinder", "person"]
    box: Box


class EvidenceRef(_Model):
    """A content-addressed evidence image, uploaded separately by its hash.

    Station frames (role `zone`) also say which camera took them, when, and what to draw:
    the zones of the scale the event is about and the detector boxes of that frame. All of
    these are optional (added in schema 1.2), so a 1.1 reference is still valid.
    """

    sha256: Sha256
    media_type: Literal["image/jpeg", "image/png"]
    role: Literal["face", "scene", "zone", "scan"] = "face"
    box: Box | None = Field(
        default=None, description="x0, y0, x1, y1 of the face or zone in the image, pixels"
    )
    camera_id: str | None = Field(
        default=None, max_length=64, description="station: the camera the frame came from"
    )
    captured_at: UtcDatetime | None = Field(
        default=None, description="station: when the camera took the frame"
    )
    zones: tuple[EvidenceZone, ...] = Field(
        default=(), max_length=64, description="station: zones to draw over the frame"
    )
    detections: tuple[EvidenceDetection, ...] = Field(
        default=(), max_length=256, description="station: detector boxes in the frame"
    )


class MatchInfo(_Model):
    """The best gallery match behind a decision."""

    operator_id: str = Field(min_length=1, max_length=64)
    certificate_no: str | None = Field(default=None, max_length=64)
    score: float = Field(
        allow_inf_nan=False,
        description="higher is closer: a cosine similarity of L2-normalised embeddings "
        "(-1..1), or a normalised score, as `score_kind` says",
    )
    threshold: float = Field(allow_inf_nan=False)
    margin: float = Field(ge=0.0, le=2.0, description="best score minus second-best score")
    score_kind: ScoreKind = ScoreKind.COSINE

    @model_validator(mode="after")
    def _on_scale(self) -> MatchInfo:
        bound = 1.0 if self.score_kind == ScoreKind.COSINE else MAX_NORMALISED_SCORE
        for name in ("score", "threshold"):
            if abs(getattr(self, name)) > bound:
                raise ValueError(
                    f"{name} {getattr(self, name)} outside ±{bound:g} for a "
                    f"{self.score_kind.value} score"
                )
        return self


class ClaimInfo(_Model):
    """An identity claim presented before the face check."""

    kind: ClaimKind
    value: str = Field(min_length=1, max_length=256)


class CabDecisionPayload(_Model):
    """The outcome of one start-up verification at a cab."""

    decision: Literal["authorized", "denied"]
    state_from: GateState
    state_to: GateState
    frames_used: Counter
    match: MatchInfo | None = None
    liveness_score: float | None = Field(default=None, ge=0.0, le=1.0)
    liveness_by: LivenessCheck | None = Field(
        default=None,
        description="how liveness was settled (None: not reached, or an older agent); only "
        "`passive` starts are free of liveness doubt",
    )
    claim: ClaimInfo | None = None
    pack_contract_id: str = Field(default="", max_length=128)
    detail: str = Field(
        default="",
        max_length=1024,
        description="why, in words (e.g. the liveness cause under LIVENESS_FAILED)",
    )


class CabReverifyPayload(_Model):
    """A periodic re-verification while the machine runs (driver change, absence)."""

    expected_operator_id: str | None = Field(default=None, max_length=64)
    observed: MatchInfo | None = None
    absent_s: float = Field(default=0.0, ge=0.0)


class CabOverridePayload(_Model):
    """Use of a one-time emergency override code (always flagged for review)."""

    code_id: str = Field(min_length=1, max_length=64)
    expires_at: UtcDatetime
    cause: str = Field(default="", max_length=256)


class StationFillPayload(_Model):
    """One fill seen at a scale, with what the scanner and the camera read."""

    scale_id: str = Field(min_length=1, max_length=64)
    cylinder_code: str | None = Field(default=None, max_length=128)
    scanned_code: str | None = Field(default=None, max_length=128)
    camera_code: str | None = Field(default=None, max_length=128)
    tare_kg: float | None = Field(default=None, ge=0.0)
    net_kg: float | None = Field(default=None, ge=0.0)
    rated_fill_kg: float | None = Field(default=None, ge=0.0)
    started_at: UtcDatetime
    ended_at: UtcDatetime | None = None
    filler_operator_id: str | None = Field(default=None, max_length=64)
    violation_ids: tuple[EventId, ...] = Field(
        default=(),
        max_length=16,
        description="the station.violation events this fill broke, sent before it (since 1.3); "
        "the server shows the fill on their review items instead of queueing it apart",
    )


class StationViolationPayload(_Model):
    """A filling rule that fired; `observed` and `limit` give the numbers behind it."""

    scale_id: str = Field(min_length=1, max_length=64)
    zone_id: str | None = Field(default=None, max_length=64)
    cylinder_code: str | None = Field(default=None, max_length=128)
    scanned_code: str | None = Field(default=None, max_length=128)
    camera_code: str | None = Field(default=None, max_length=128)
    observed: float | None = None
    limit: float | None = None
    detail: str = Field(default="", max_length=1024)


class DeviceFaultPayload(_Model):
    """A device component failed or recovered (camera, model, interlock, clock, outbox)."""

    component: Literal[
        "camera", "model", "interlock", "gallery", "clock", "scale", "scanner", "outbox"
    ]
    message: str = Field(max_length=1024)
    recovered: bool = False


class _EventBase(Message):
    event_id: EventId
    device_id: DeviceId
    seq: Counter = Field(description="per-device monotonic sequence number")
    occurred_at: UtcDatetime
    reason: ReasonCode
    severity: Severity = Severity.INFO
    evidence: tuple[EvidenceRef, ...] = Field(default=(), max_length=16)


class CabDecisionEvent(_EventBase):
    """Start-up verification result at a cab."""

    kind: Literal[EventKind.CAB_DECISION] = EventKind.CAB_DECISION
    payload: CabDecisionPayload

    @model_validator(mode="after")
    def _reason_matches_decision(self) -> CabDecisionEvent:
        authorized = self.payload.decision == "authorized"
        if authorized != (self.reason == ReasonCode.AUTHORIZED):
            raise ValueError("reason must be AUTHORIZED exactly when the decision is 'authorized'")
        return self


class CabReverifyEvent(_EventBase):
    """Re-verification outcome while the machine runs."""

    kind: Literal[EventKind.CAB_REVERIFY] = EventKind.CAB_REVERIFY
    payload: CabReverifyPayload


class CabOverrideEvent(_EventBase):
    """Emergency override use."""

    kind: Literal[EventKind.CAB_OVERRIDE] = EventKind.CAB_OVERRIDE
    payload: CabOverridePayload


class StationFillEvent(_EventBase):
    """A completed fill."""

    kind: Literal[EventKind.STATION_FILL] = EventKind.STATION_FILL
    payload: StationFillPayload


class StationViolationEvent(_EventBase):
    """A filling-rule violation."""

    kind: Literal[EventKind.STATION_VIOLATION] = EventKind.STATION_VIOLATION
    payload: StationViolationPayload


class DeviceFaultEvent(_EventBase):
    """A device fault or recovery."""

    kind: Literal[EventKind.DEVICE_FAULT] = EventKind.DEVICE_FAULT
    payload: DeviceFaultPayload


Event = Annotated[
    CabDecisionEvent
    | CabReverifyEvent
    | CabOverrideEvent
    | StationFillEvent
    | StationViolationEvent
    | DeviceFaultEvent,
    Field(discriminator="kind"),
]
"""Any event; `kind` selects the payload schema."""


class EventBatch(Message):
    """Events a device delivers in one request; the body is signed by the device key."""

    device_id: DeviceId
    sent_at: UtcDatetime
    events: tuple[Event, ...] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _events_belong_to_device(self) -> EventBatch:
        for index, event in enumerate(self.events):
            if event.device_id != self.device_id:
                raise ValueError(
                    f"events.{index}.device_id {event.device_id!r} differs from the batch's "
                    f"device_id {self.device_id!r}"
                )
        return self


class SequenceGap(_Model):
    """A run of sequence numbers the server has not seen from a device."""

    first_missing: Counter
    last_missing: Counter


class EventRejection(_Model):
    """An event the server refused to store or acknowledge, and why.

    `event_id_taken`: another device already stored an event under this id.
    `content_differs`: this device already stored this id with other content.
    The device keeps the event (it is not acknowledged); the server audits the conflict.
    """

    event_id: uuid.UUID
    reason: Literal["event_id_taken", "content_differs"]


class EventBatchAck(Message):
    """The server's answer to an event batch; duplicates are acknowledged, not re-stored."""

    accepted: tuple[uuid.UUID, ...] = ()
    duplicates: tuple[uuid.UUID, ...] = ()
    gaps: tuple[SequenceGap, ...] = ()
    rejected: tuple[EventRejection, ...] = Field(
        default=(),
        description="conflicting ids, neither stored nor acknowledged; omitted when empty",
    )


# --- gallery --------------------------------------------------------------------------------


class EmbeddingContract(_Model):
    """What makes two embeddings comparable: the model pack and its contract hash."""

    pack_name: str = Field(min_length=1, max_length=64)
    pack_version: str = Field(min_length=1, max_length=32)
    contract_id: str = Field(min_length=8, max_length=128)
    dim: int = Field(ge=1, le=4096)
    metric: Literal["cosine"] = "cosine"


class CertificateInfo(_Model):
    """The certificate facts a device needs to decide, without personal details."""

    certificate_no: str = Field(min_length=1, max_length=64)
    category: str = Field(min_length=1, max_length=16, description="e.g. Q2 or N1")
    code_system: CodeSystem = CodeSystem.TSG2019
    scope: str | None = Field(default=None, max_length=64, description="e.g. 桥式起重机")
    issue_date: date
    expiry_date: date
    status: CertificateStatus

    @model_validator(mode="after")
    def _dates_ordered(self) -> CertificateInfo:
        if self.expiry_date < self.issue_date:
            raise ValueError("expiry_date is before issue_date")
        return self


class GalleryOperator(_Model):
    """An operator as a device sees them."""

    operator_id: str = Field(min_length=1, max_length=64)
    display_name: str = Field(min_length=1, max_length=64)
    id_number_masked: str = Field(max_length=32)
    employee_no: str | None = Field(default=None, max_length=64)
    ic_card: str | None = Field(default=None, max_length=64)
    certificates: tuple[CertificateInfo, ...] = ()


class GalleryTemplate(_Model):
    """One face template: an L2-normalised embedding and where it came from."""

    template_id: str = Field(min_length=1, max_length=64)
    operator_id: str = Field(min_length=1, max_length=64)
    embedding: tuple[float, ...] = Field(min_length=1, max_length=4096)
    quality: float = Field(ge=0.0, le=1.0)
    source_sha256: Sha256


def _check_templates(
    contract: EmbeddingContract,
    templates: tuple[GalleryTemplate, ...],
    operator_ids: set[str] | None,
) -> None:
    for index, template in enumerate(templates):
        if len(template.embedding) != contract.dim:
            raise ValueError(
                f"templates.{index}.embedding has {len(template.embedding)} values, "
                f"the contract says {contract.dim}"
            )
        if operator_ids is not None and template.operator_id not in operator_ids:
            raise ValueError(f"templates.{index}.operator_id {template.operator_id!r} is unknown")


class GallerySnapshot(Message):
    """Every template a device may match against, at one version."""

    device_id: DeviceId
    version: Counter
    contract: EmbeddingContract
    generated_at: UtcDatetime
    operators: tuple[GalleryOperator, ...] = ()
    templates: tuple[GalleryTemplate, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> GallerySnapshot:
        _check_templates(self.contract, self.templates, {o.operator_id for o in self.operators})
        return self


class GalleryDelta(Message):
    """Changes between two gallery versions; applying it to `from_version` gives `to_version`."""

    device_id: DeviceId
    from_version: Counter
    to_version: Counter
    contract: EmbeddingContract
    generated_at: UtcDatetime
    upsert_operators: tuple[GalleryOperator, ...] = ()
    upsert_templates: tuple[GalleryTemplate, ...] = ()
    removed_operator_ids: tuple[str, ...] = ()
    removed_template_ids: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> GalleryDelta:
        if self.to_version < self.from_version:
            raise ValueError("to_version is older than from_version")
        _check_templates(self.contract, self.upsert_templates, None)
        return self


class GalleryUpdateRequired(Message):
    """Sent instead of templates when the device's model pack cannot compare them."""

    device_id: DeviceId
    server_contract: EmbeddingContract
    device_contract_id: str = Field(max_length=128)
    detail: str = Field(default="", max_length=512)


# --- device configuration -------------------------------------------------------------------


class CategoryRule(_Model):
    """A certificate category that may operate a device, with an optional scope restriction."""

    category: str = Field(min_length=1, max_length=16)
    code_system: CodeSystem = CodeSystem.TSG2019
    scope: str | None = Field(default=None, max_length=64)


class DeviceConfig(Message):
    """Settings the server pushes to a device; local YAML holds only what the site owns."""

    device_id: DeviceId
    kind: DeviceKind
    site_id: str = Field(min_length=1, max_length=64)
    config_version: Counter
    issued_at: UtcDatetime
    accepted_categories: tuple[CategoryRule, ...] = ()
    calibration: str | None = Field(default=None, max_length=64)
    max_gallery_age_s: int = Field(default=86_400, ge=60, le=30 * 86_400)


# --- filling-station registry ---------------------------------------------------------------


class StationCylinderType(_Model):
    """A cylinder type and the mass it may be filled with."""

    code: str = Field(min_length=1, max_length=32)
    rated_fill_kg: float = Field(gt=0.0, le=1000.0)


class StationCylinder(_Model):
    """One registered cylinder as a filling station needs it (一瓶一码)."""

    code: str = Field(min_length=1, max_length=128)
    type_code: str = Field(min_length=1, max_length=32)
    owner_station_id: str = Field(min_length=1, max_length=64)
    status: CylinderStatus
    manufactured_on: date
    design_life_years: int = Field(ge=1, le=50)
    next_inspection_due: date | None = Field(
        default=None, description="None: no inspection date known (the station refuses it)"
    )
    entrusted_station_ids: tuple[str, ...] = ()


class StationFiller(_Model):
    """One certificate of an operator who may fill at the station's site."""

    operator_id: str = Field(min_length=1, max_length=64)
    certificate_no: str = Field(min_length=1, max_length=64)
    category: str = Field(min_length=1, max_length=16)
    valid_until: date
    status: CertificateStatus


class StationRegistry(Message):
    """The registry slice a filling-station device checks scans against (signed, whole)."""

    device_id: DeviceId
    station_id: str = Field(min_length=1, max_length=64)
    generated_at: UtcDatetime
    cylinder_types: tuple[StationCylinderType, ...] = ()
    cylinders: tuple[StationCylinder, ...] = ()
    fillers: tuple[StationFiller, ...] = ()


class SignedEnvelope(Message):
    """A server-signed payload: the exact JSON bytes that were signed, and the signature."""

    payload_type: Literal["gallery.snapshot", "gallery.delta", "device.config", "station.registry"]
    payload: str = Field(description="the signed JSON text, parsed only after verification")
    key_id: str = Field(min_length=1, max_length=64)
    algorithm: Literal["ed25519"] = "ed25519"
    signature: str = Field(pattern=r"^[A-Za-z0-9+/]+={0,2}$", description="base64")


TOP_LEVEL_MESSAGES: tuple[type[Message], ...] = (
    DeviceIdentity,
    Heartbeat,
    EventBatch,
    EventBatchAck,
    GallerySnapshot,
    GalleryDelta,
    GalleryUpdateRequired,
    DeviceConfig,
    StationRegistry,
    SignedEnvelope,
)
"""Messages sent on their own; each gets a JSON Schema file in docs/contract/."""
