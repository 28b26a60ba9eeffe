"""SQLAlchemy 2 tables of the server; API schemas live apart in server/schemas.py."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)


UtcDateTime = DateTime(timezone=True)


class Enterprise(Base):
    """A company that runs special equipment."""

    __tablename__ = "enterprises"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(32), default="")


class Site(Base):
    """A place where devices work (a yard, a warehouse, a filling station)."""

    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("enterprises.id"))
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(400), default="")


class Device(Base):
    """An edge device; its key signs its requests, its rules say who may operate it."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    serial: Mapped[str] = mapped_column(String(128), default="")
    # The HMAC key itself: a MAC can only be checked with the shared secret.
    key: Mapped[bytes] = mapped_column(LargeBinary(64))
    accepted_categories: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    calibration: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config_version: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_gallery_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    gallery_version: Mapped[int] = mapped_column(BigInteger, default=0)
    pack_contract_id: Mapped[str] = mapped_column(String(128), default="")
    agent_version: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[str] = mapped_column(String(32), default="")


class Station(Base):
    """A gas-cylinder filling station."""

    __tablename__ = "stations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(String(200))
    license_no: Mapped[str] = mapped_column(String(64), default="")


class Scale(Base):
    """A filling scale at a station, watched by a device."""

    __tablename__ = "scales"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"))
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    capacity_kg: Mapped[float | None] = mapped_column(Float, nullable=True)


class CylinderType(Base):
    """A cylinder model (e.g. YSP-15) with its rated fill mass."""

    __tablename__ = "cylinder_types"
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    rated_fill_kg: Mapped[float] = mapped_column(Float)
    design_life_years: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(200), default="")


class Cylinder(Base):
    """One gas cylinder, known by its unique code."""

    __tablename__ = "cylinders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(128), unique=True)
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    type_code: Mapped[str] = mapped_column(ForeignKey("cylinder_types.code"))
    manufactured_on: Mapped[date] = mapped_column(Date)
    design_life_years: Mapped[int] = mapped_column(Integer)
    last_inspection: Mapped[date | None] = mapped_column(Date, nullable=True)
    next_inspection: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="in_service")


class Operator(Base):
    """A person who operates equipment; the full ID number never leaves the server."""

    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    id_number_masked: Mapped[str] = mapped_column(String(32))
    employee_no: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ic_card: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OperatorSite(Base):
    """Which sites an operator works at (a device only sees operators of its site)."""

    __tablename__ = "operator_sites"
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)


class Certificate(Base):
    """A special-equipment operator certificate (证书), keyed by its number."""

    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_status_expiry", "status", "expiry_date"),)
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    category: Mapped[str] = mapped_column(String(16))
    code_system: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issue_date: Mapped[date] = mapped_column(Date)
    expiry_date: Mapped[date] = mapped_column(Date)
    authority: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str] = mapped_column(String(400), default="")
    photo_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Template(Base):
    """A face template with the embedding contract that makes it comparable."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("operator_id", "contract_id", "source_sha256"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), index=True)
    pack_name: Mapped[str] = mapped_column(String(64))
    pack_version: Mapped[str] = mapped_column(String(32))
    contract_id: Mapped[str] = mapped_column(String(128))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[list[float]] = mapped_column(JSON)
    source_sha256: Mapped[str] = mapped_column(String(64))
    quality: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    origin: Mapped[str] = mapped_column(
        String(16), default="certificate", server_default="certificate"
    )
    """server.domain.TemplateOrigin."""
    event_id: Mapped[str | None] = mapped_column(String(36), nullable=True, unique=True)
    """The start a capture came from (start_capture only)."""


class GalleryChange(Base):
    """One gallery version: an operator (or a device's rules) changed."""

    __tablename__ = "gallery_changes"
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    operator_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class Counter(Base):
    """Named counters whose row lock serialises writers (gallery version, audit head)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)
    text: Mapped[str] = mapped_column(String(128), default="")


class Event(Base):
    """An event a device reported; flagged ones wait in the review queue."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_flagged_time", "flagged", "occurred_at"),
        Index("ix_events_device_seq", "device_id", "seq"),
        Index("ix_events_device_time", "device_id", "occurred_at"),
    )
    # Rows are sealed (mac) when stored; nothing needs the server default read back.
    __mapper_args__ = {"eager_defaults": False}
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    flagged: Mapped[bool] = mapped_column(Boolean)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    review_status: Mapped[str] = mapped_column(String(16), default="none")
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    batch_audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """server.ingest.content_hash of the body as received; NULL on rows stored before 0005
    (ingest then hashes the stored body)."""
    mac: Mapped[str] = mapped_column(String(64), server_default="")
    """server.audit.event_mac: the row as stored, sealed with the audit key."""


class FillLink(Base):
    """A station violation and the fill it happened in: one incident, one review item.

    The fill reports its violations' ids (or, for agents before schema 1.3, the server matched
    them by device, scale, cylinder and time). A violation may arrive after the link is known,
    so `violation_id` is not a foreign key; the link counts once that event is stored for the
    same device.
    """

    __tablename__ = "fill_links"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    violation_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    fill_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"), index=True)
    matched_by: Mapped[str] = mapped_column(String(16))
    """server.domain.LinkSource."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SequenceGap(Base):
    """A run of sequence numbers a device skipped (events lost or still in its outbox)."""

    __tablename__ = "sequence_gaps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    first_missing: Mapped[int] = mapped_column(BigInteger)
    last_missing: Mapped[int] = mapped_column(BigInteger)
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Evidence(Base):
    """An evidence image stored on disk under its SHA-256."""

    __tablename__ = "evidence"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[str] = mapped_column(String(64))
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime)


class User(Base):
    """A person who logs in: supervisor, cert_office or admin."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A login session: only the token's SHA-256 is stored."""

    __tablename__ = "api_tokens"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Decision(Base):
    """A reviewer's decision; append-only, a later one supersedes the earlier."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    outcome: Mapped[str] = mapped_column(String(32))
    comment: Mapped[str] = mapped_column(Text, default="")
    supersedes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewMark(Base):
    """That one user has looked at one event (reviewed state is per user)."""

    __tablename__ = "review_marks"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"), primary_key=True)
    reviewed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One link of the hash-chained audit log, sealed with the audit key."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), index=True)
    data: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64), server_default="")
    """server.audit.entry_mac: HMAC-SHA256 of seq and hash under the audit key."""


class LoginThrottle(Base):
    """Failed logins counted per attempted username and per client address, and their lock.

    Kept in the database so every worker and a restarted server see the same counts.
    """

    __tablename__ = "login_throttle"
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    """server.security.ThrottleScope: "user" or "address"."""
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
