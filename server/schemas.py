"""API schemas (XCreate / X / XPublic), kept apart from the tables in server/tables.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract.codes import CertificateStatus, CylinderStatus, DeviceKind
from contract.messages import CategoryRule, DeviceId
from server.domain import Outcome, Role

Slug = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class LoginRequest(_In):
    """Username and password."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenPublic(_Out):
    """A bearer token for later requests."""

    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    role: Role


class UserCreate(_In):
    """A new user account."""

    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=8, max_length=256)
    role: Role
    display_name: str = Field(default="", max_length=64)


class UserPublic(_Out):
    """A user as others see them."""

    id: int
    username: str
    role: Role
    display_name: str
    active: bool


class EnterpriseCreate(_In):
    """A new enterprise."""

    id: str = Slug
    name: str = Field(min_length=1, max_length=200)
    credit_code: str = Field(default="", max_length=32)


class EnterprisePublic(_Out):
    """An enterprise."""

    id: str
    name: str
    credit_code: str


class SiteCreate(_In):
    """A new site of an enterprise."""

    id: str = Slug
    enterprise_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    address: str = Field(default="", max_length=400)


class SitePublic(_Out):
    """A site."""

    id: str
    enterprise_id: str
    name: str
    address: str


class DeviceCreate(_In):
    """Registration of an edge device."""

    device_id: DeviceId
    kind: DeviceKind
    site_id: str = Field(min_length=1, max_length=64)
    serial: str = Field(default="", max_length=128)
    accepted_categories: list[CategoryRule] = Field(default_factory=list)
    calibration: str | None = Field(default=None, max_length=64)


class DeviceUpdate(_In):
    """A change of a device's rules or placement (bumps its config version)."""

    site_id: str | None = Field(default=None, min_length=1, max_length=64)
    accepted_categories: list[CategoryRule] | None = None
    calibration: str | None = Field(default=None, max_length=64)
    active: bool | None = None


class DeviceRegistered(_Out):
    """Returned once at registration: the device key is never shown again."""

    device_id: str
    device_key: str
    server_public_key: str
    key_id: str


class DevicePublic(_Out):
    """A device without its key."""

    id: str
    kind: DeviceKind
    site_id: str
    serial: str
    accepted_categories: list[dict[str, Any]]
    calibration: str | None
    config_version: int
    active: bool
    last_seq: int | None
    last_seen_at: datetime | None
    gallery_version: int
    pack_contract_id: str


class StationCreate(_In):
    """A filling station."""

    id: str = Slug
    site_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    license_no: str = Field(default="", max_length=64)


class StationPublic(_Out):
    """A filling station."""

    id: str
    site_id: str
    name: str
    license_no: str


class ScaleCreate(_In):
    """A scale at a station."""

    id: str = Slug
    station_id: str = Field(min_length=1, max_length=64)
    device_id: str | None = Field(default=None, max_length=64)
    name: str = Field(default="", max_length=200)
    capacity_kg: float | None = Field(default=None, gt=0.0)


class ScalePublic(_Out):
    """A scale."""

    id: str
    station_id: str
    device_id: str | None
    name: str
    capacity_kg: float | None


class CylinderTypeCreate(_In):
    """A cylinder model and its rated fill mass."""

    code: str = Field(min_length=1, max_length=32)
    rated_fill_kg: float = Field(gt=0.0, le=1000.0)
    design_life_years: int = Field(ge=1, le=50)
    description: str = Field(default="", max_length=200)


class CylinderTypePublic(_Out):
    """A cylinder model."""

    code: str
    rated_fill_kg: float
    design_life_years: int
    description: str


class CylinderCreate(_In):
    """A cylinder; design life defaults to its type's."""

    code: str = Field(min_length=1, max_length=128)
    station_id: str = Field(min_length=1, max_length=64)
    type_code: str = Field(min_length=1, max_length=32)
    manufactured_on: date
    design_life_years: int | None = Field(default=None, ge=1, le=50)
    last_inspection: date | None = None
    next_inspection: date | None = None
    status: CylinderStatus = CylinderStatus.IN_SERVICE


class CylinderPublic(_Out):
    """A cylinder with its type's rated fill."""

    code: str
    station_id: str
    type_code: str
    rated_fill_kg: float
    manufactured_on: date
    design_life_years: int
    last_inspection: date | None
    next_inspection: date | None
    status: CylinderStatus


class CertificatePublic(_Out):
    """A certificate as shown to users."""

    number: str
    category: str
    code_system: str
    scope: str | None
    issue_date: date
    expiry_date: date
    authority: str
    status: CertificateStatus
    status_reason: str


class OperatorPublic(_Out):
    """An operator; the ID number is always masked."""

    id: str
    name: str
    id_number_masked: str
    employee_no: str | None
    ic_card: str | None
    site_ids: list[str]
    certificates: list[CertificatePublic]
    template_count: int


class OperatorSitesUpdate(_In):
    """The sites an operator works at."""

    site_ids: list[str] = Field(max_length=1000)


class StatusChange(_In):
    """Revocation, suspension or reinstatement of a certificate."""

    reason: str = Field(min_length=1, max_length=400)


class ImportRowError(_Out):
    """A problem with one row of an import."""

    row: int
    field: str
    message: str


class ImportReport(_Out):
    """What an import did (or would do, for a dry run)."""

    dry_run: bool
    applied: bool
    rows: int
    added: list[str]
    changed: list[str]
    revoked: list[str]
    unchanged: list[str]
    templates_added: int
    errors: list[ImportRowError]
    rejected_rows: list[int]


class LinkedFill(_Out):
    """The station fill a violation happened in (cylinder, masses, times in `body.payload`)."""

    event_id: str
    reason: str
    occurred_at: datetime
    body: dict[str, Any]


class EventPublic(_Out):
    """A stored event with its review state."""

    event_id: str
    device_id: str
    site_id: str
    seq: int
    kind: str
    reason: str
    severity: str
    flagged: bool
    occurred_at: datetime
    received_at: datetime
    review_status: str
    claimed_by: int | None
    latest_outcome: str | None = None
    reviewed_by_me: bool = False
    body: dict[str, Any] | None = None
    covers: list[str] = Field(
        default_factory=list,
        description="fills folded into this review item: a decision on the item covers them",
    )
    fill: LinkedFill | None = Field(
        default=None, description="station violations: the fill it happened in, if known"
    )


class DecisionCreate(_In):
    """A reviewer's decision."""

    outcome: Outcome
    comment: str = Field(default="", max_length=4000)


class DecisionPublic(_Out):
    """A decision, with the one it supersedes."""

    id: int
    event_id: str
    user_id: int
    outcome: Outcome
    comment: str
    supersedes: int | None
    decided_at: datetime


class GapPublic(_Out):
    """A recorded sequence gap."""

    device_id: str
    first_missing: int
    last_missing: int
    detected_at: datetime


class AuditReport(_Out):
    """The result of walking the audit chain."""

    ok: bool
    entries: int
    problems: list[str]


class AuditCheckpointContent(_In):
    """What a checkpoint vouches for (server.audit.checkpoint)."""

    kind: str = Field(max_length=64)
    seq: int = Field(ge=0, le=2**63 - 1)
    count: int = Field(ge=0, le=2**63 - 1)
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    at: str = Field(max_length=40)
    audit_key_id: str = Field(max_length=64)


class AuditCheckpoint(_In):
    """A signed head of the audit chain, to be kept outside the server."""

    content: AuditCheckpointContent
    key_id: str = Field(max_length=64)
    public_key: str = Field(max_length=64)
    signature: str = Field(max_length=128)
