"""Enumerations shared by the edge agents and the server."""

from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    """What kind of equipment an edge device guards."""

    CRANE = "crane"
    FORKLIFT = "forklift"
    FILLING_STATION = "filling_station"


class CodeSystem(StrEnum):
    """Which catalogue a certificate category code belongs to.

    The 2019 catalogue (TSG Z6001-2019) and the legacy codes reuse some codes with different
    meanings, so a code is only comparable together with its system.
    """

    TSG2019 = "tsg2019"
    LEGACY = "legacy"


class CertificateStatus(StrEnum):
    """Lifecycle state of an operator certificate."""

    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SUSPENDED = "suspended"


class CylinderStatus(StrEnum):
    """Registry lifecycle of a gas cylinder; a station files inspection_due as in service."""

    # At a station the due date itself decides INSPECTION_OVERDUE (edge_agent/station/sync.py).

    IN_SERVICE = "in_service"
    INSPECTION_DUE = "inspection_due"
    SUSPENDED = "suspended"
    SCRAPPED = "scrapped"


class GateState(StrEnum):
    """States of the cab agent's start interlock."""

    LOCKED = "locked"
    VERIFYING = "verifying"
    AUTHORIZED = "authorized"
    RUNNING = "running"


class Severity(StrEnum):
    """How urgently a supervisor should look at an event."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class EventKind(StrEnum):
    """The kind of an event; it selects the payload schema."""

    CAB_DECISION = "cab.decision"
    CAB_REVERIFY = "cab.reverify"
    CAB_OVERRIDE = "cab.override"
    STATION_FILL = "station.fill"
    STATION_VIOLATION = "station.violation"
    DEVICE_FAULT = "device.fault"


class ReasonCode(StrEnum):
    """Why an edge device decided what it decided. Every event carries exactly one."""

    # Cab gate: positive outcome.
    AUTHORIZED = "AUTHORIZED"
    # Cab gate: refusals.
    NO_FACE = "NO_FACE"
    LOW_QUALITY = "LOW_QUALITY"
    LIVENESS_FAILED = "LIVENESS_FAILED"
    NO_MATCH = "NO_MATCH"
    AMBIGUOUS_MATCH = "AMBIGUOUS_MATCH"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_REVOKED = "CERT_REVOKED"
    CERT_SUSPENDED = "CERT_SUSPENDED"
    WRONG_CATEGORY = "WRONG_CATEGORY"
    CLAIM_REQUIRED = "CLAIM_REQUIRED"
    CLAIM_UNKNOWN = "CLAIM_UNKNOWN"
    CLAIM_MISMATCH = "CLAIM_MISMATCH"
    # Cab gate: fail-closed conditions.
    GALLERY_STALE = "GALLERY_STALE"
    GALLERY_INVALID = "GALLERY_INVALID"
    CAMERA_LOST = "CAMERA_LOST"
    MODEL_MISSING = "MODEL_MISSING"
    CLOCK_UNTRUSTED = "CLOCK_UNTRUSTED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Either agent: a damaged outbox file or row was set aside (kept, not delivered).
    OUTBOX_QUARANTINED = "OUTBOX_QUARANTINED"
    # Cab gate: while running.
    OVERRIDE = "OVERRIDE"
    DRIVER_CHANGED = "DRIVER_CHANGED"
    OPERATOR_ABSENT = "OPERATOR_ABSENT"
    REVERIFIED = "REVERIFIED"
    ENGINE_STOPPED = "ENGINE_STOPPED"
    # Filling station.
    FILL_OK = "FILL_OK"
    UNSCANNED_FILL = "UNSCANNED_FILL"
    UNREGISTERED_CYLINDER = "UNREGISTERED_CYLINDER"
    FOREIGN_CYLINDER = "FOREIGN_CYLINDER"
    INSPECTION_OVERDUE = "INSPECTION_OVERDUE"
    CYLINDER_SCRAPPED = "CYLINDER_SCRAPPED"
    BEYOND_DESIGN_LIFE = "BEYOND_DESIGN_LIFE"
    UNCERTIFIED_FILLER = "UNCERTIFIED_FILLER"
    DUPLICATE_FILL = "DUPLICATE_FILL"
    SWAPPED_CODE = "SWAPPED_CODE"
    OVERFILL = "OVERFILL"
    FILLER_ABSENT = "FILLER_ABSENT"


class ClaimKind(StrEnum):
    """How an operator states who they are before the face check (1:1 mode)."""

    CERT_QR = "cert_qr"
    IC_CARD = "ic_card"
    EMPLOYEE_NO = "employee_no"


class ScoreKind(StrEnum):
    """What a match score is, and so which scale its threshold is on."""

    COSINE = "cosine"
    """Cosine similarity of L2-normalised embeddings, -1..1."""
    AS_NORM = "as_norm"
    """Adaptive symmetric normalisation of the cosine against a cohort (models.matching):
    a standardised score, roughly 0 for an impostor and several units for the right person."""


class LivenessCheck(StrEnum):
    """How liveness was settled for an authorized start."""

    PASSIVE = "passive"
    """The passive check found the frames live without asking for a challenge."""
    CHALLENGE = "challenge"
    """The passive check was in doubt (or the policy always asks): the challenge decided."""
    NONE = "none"
    """No liveness check ran (policy none)."""
