"""Domain types of the filling station: inputs to the rules and registry records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from contract.codes import CylinderStatus


class LoginMethod(StrEnum):
    """How a filler identified at a scale."""

    FACE = "face"
    LOGIN = "login"


@dataclass(frozen=True)
class CylinderType:
    """A cylinder type and the mass it may be filled with."""

    code: str
    rated_fill_kg: float


@dataclass(frozen=True)
class CylinderRecord:
    """One registered cylinder (一瓶一码)."""

    code: str
    type_code: str
    owner_station_id: str
    status: CylinderStatus
    manufactured_on: date
    design_life_years: int
    next_inspection_due: date
    entrusted_station_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class FillerCertificate:
    """A filler's operator certificate as the registry knows it."""

    operator_id: str
    category: str
    valid_until: date
    revoked: bool = False


@dataclass(frozen=True)
class CodeScan:
    """A code read by the scanner at a scale."""

    at: float
    scale_id: str
    code: str


@dataclass(frozen=True)
class FillerLogin:
    """A filler identified at a scale (face at the station or operator login)."""

    at: float
    scale_id: str
    operator_id: str
    method: LoginMethod


@dataclass(frozen=True)
class ScaleReading:
    """Gross mass and valve state of a scale at one instant."""

    at: float
    scale_id: str
    gross_kg: float
    valve_open: bool


@dataclass(frozen=True)
class ZoneObservation:
    """What one camera frame shows at one zone."""

    at: float
    zone_id: str
    scale_id: str
    cylinder_present: bool
    person_present: bool
    codes: tuple[str, ...] = ()
    cylinder_fraction: float = 0.0
    person_fraction: float = 0.0
