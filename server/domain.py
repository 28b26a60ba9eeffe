"""Server domain rules: ID numbers, masking, roles and how events are classified."""

from __future__ import annotations

from enum import StrEnum

from contract.citizen_id import validate_gb11643
from contract.codes import EventKind, ReasonCode, Severity


class Role(StrEnum):
    """Who may call a route."""

    DEVICE = "device"
    SUPERVISOR = "supervisor"
    CERT_OFFICE = "cert_office"
    ADMIN = "admin"


class TemplateOrigin(StrEnum):
    """Where an operator's face template came from."""

    CERTIFICATE = "certificate"
    """The certificate (ID) photo of the office import: always kept."""
    ENROLLMENT = "enrollment"
    """A capture enrolled on purpose by staff (API)."""
    START_CAPTURE = "start_capture"
    """A frame of a start authorized under a 1:1 claim with no liveness doubt (automatic)."""


class Outcome(StrEnum):
    """A reviewer's decision about a flagged event."""

    CONFIRMED_VIOLATION = "confirmed_violation"
    FALSE_ALARM = "false_alarm"
    NEEDS_FOLLOW_UP = "needs_follow_up"


class ReviewStatus(StrEnum):
    """Where a flagged event stands in the review queue."""

    NONE = "none"
    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"


class LinkSource(StrEnum):
    """How the server knows a violation belongs to a fill."""

    DEVICE = "device"
    """The fill event listed the violation's id (schema 1.3 on)."""
    WINDOW = "window"
    """Matched for an older agent: same device and scale, a shared cylinder code, and the
    violation inside the fill's start..end."""


FILL_VIOLATIONS = frozenset(
    {
        ReasonCode.UNSCANNED_FILL,
        ReasonCode.SWAPPED_CODE,
        ReasonCode.FILLER_ABSENT,
        ReasonCode.OVERFILL,
    }
)
"""The violations the station rules record against a running fill (edge_agent/station/rules.py);
scan refusals happen before any fill and are never matched to one."""


def id_number_problem(value: str) -> str | None:
    """Why `value` is not a valid GB 11643 citizen ID number, or None when it is."""
    return validate_gb11643(value)


def normalize_id_number(value: str) -> str:
    """Strip spaces and upper-case the check character."""
    return value.strip().replace(" ", "").upper()


def mask_id_number(value: str) -> str:
    """Show only the region prefix and the last four characters: 3701**********123X."""
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]


# Why each flagged reason gets its severity: anything that lets a machine run (or a cylinder
# be filled) unsafely is high or critical; refusals caused by the device itself are medium.
_CAB_DENIED_SEVERITY: dict[ReasonCode, Severity] = {
    ReasonCode.NO_FACE: Severity.LOW,
    ReasonCode.LOW_QUALITY: Severity.LOW,
    ReasonCode.LIVENESS_FAILED: Severity.HIGH,
    ReasonCode.NO_MATCH: Severity.MEDIUM,
    ReasonCode.AMBIGUOUS_MATCH: Severity.MEDIUM,
    ReasonCode.CERT_EXPIRED: Severity.MEDIUM,
    ReasonCode.CERT_REVOKED: Severity.HIGH,
    ReasonCode.CERT_SUSPENDED: Severity.HIGH,
    ReasonCode.WRONG_CATEGORY: Severity.MEDIUM,
    ReasonCode.CLAIM_MISMATCH: Severity.HIGH,
}
_VIOLATION_SEVERITY: dict[ReasonCode, Severity] = {
    ReasonCode.CYLINDER_SCRAPPED: Severity.CRITICAL,
    ReasonCode.BEYOND_DESIGN_LIFE: Severity.CRITICAL,
    ReasonCode.OVERFILL: Severity.CRITICAL,
    ReasonCode.SWAPPED_CODE: Severity.HIGH,
    ReasonCode.FOREIGN_CYLINDER: Severity.HIGH,
    ReasonCode.UNREGISTERED_CYLINDER: Severity.HIGH,
    ReasonCode.INSPECTION_OVERDUE: Severity.HIGH,
    ReasonCode.UNCERTIFIED_FILLER: Severity.HIGH,
}
_SEVERITY_ORDER = list(Severity)
_UNVERIFIED_OPERATION = {ReasonCode.DRIVER_CHANGED, ReasonCode.OPERATOR_ABSENT}


def _max(a: Severity, b: Severity) -> Severity:
    return a if _SEVERITY_ORDER.index(a) >= _SEVERITY_ORDER.index(b) else b


def classify(kind: str, reason: str, reported: str) -> tuple[bool, Severity]:
    """(flagged, severity) of an event; the server never lowers what the device reported."""
    code = ReasonCode(reason)
    device_severity = Severity(reported)
    flagged = False
    severity = Severity.INFO
    if kind == EventKind.CAB_DECISION and code != ReasonCode.AUTHORIZED:
        flagged, severity = True, _CAB_DENIED_SEVERITY.get(code, Severity.MEDIUM)
    elif (
        kind == EventKind.CAB_REVERIFY
        and code in _UNVERIFIED_OPERATION
        or kind == EventKind.CAB_OVERRIDE
    ):
        flagged, severity = True, Severity.HIGH
    elif (
        kind == EventKind.STATION_VIOLATION
        or kind == EventKind.STATION_FILL
        and code != ReasonCode.FILL_OK
    ):
        flagged, severity = True, _VIOLATION_SEVERITY.get(code, Severity.MEDIUM)
    if flagged:
        return True, _max(severity, device_severity)
    return False, device_severity
