"""A small registry of simulated cylinders and fillers, one per rule to exercise."""

from __future__ import annotations

from datetime import UTC, date, datetime

from contract.codes import CylinderStatus
from edge_agent.station.domain import (
    CylinderRecord,
    CylinderType,
    FillerCertificate,
)
from edge_agent.station.registry import LocalRegistry

STATION_ID = "ST-JN-001"
LPG_15KG = CylinderType("YSP35.5", rated_fill_kg=14.5)

GOOD = tuple(f"SD-LPG-{n:06d}" for n in range(101, 121))
ENTRUSTED = "SD-LPG-900002"
FOREIGN = "SD-LPG-900001"
SCRAPPED = "SD-LPG-900003"
OVERDUE = "SD-LPG-900004"
TOO_OLD = "SD-LPG-900005"
UNREGISTERED = "SD-LPG-999999"

FILLER = "F001"
FILLER_EXPIRED = "F002"
FILLER_WRONG_CATEGORY = "F003"


def _cylinder(code: str, owner: str = STATION_ID, **kw: object) -> CylinderRecord:
    fields: dict[str, object] = {
        "code": code,
        "type_code": LPG_15KG.code,
        "owner_station_id": owner,
        "status": CylinderStatus.IN_SERVICE,
        "manufactured_on": date(2022, 3, 1),
        "design_life_years": 8,
        "next_inspection_due": date(2027, 3, 1),
    }
    fields.update(kw)
    return CylinderRecord(**fields)  # type: ignore[arg-type]


SYNCED_AT = datetime(2026, 5, 31, 22, 0, tzinfo=UTC)
"""Two hours before the scenarios' shift start (runner.SHIFT_START)."""


def sim_registry(
    station_id: str = STATION_ID, synced_at: datetime | None = SYNCED_AT
) -> LocalRegistry:
    """Cylinders and fillers for the scenarios (dates relative to a shift in June 2026)."""
    cylinders = [_cylinder(c, station_id) for c in GOOD]
    cylinders += [
        _cylinder(FOREIGN, "ST-QD-007"),
        _cylinder(ENTRUSTED, "ST-QD-007", entrusted_station_ids=(station_id,)),
        _cylinder(SCRAPPED, station_id, status=CylinderStatus.SCRAPPED),
        _cylinder(OVERDUE, station_id, next_inspection_due=date(2026, 3, 1)),
        _cylinder(TOO_OLD, station_id, manufactured_on=date(2016, 5, 1)),
    ]
    fillers = [
        FillerCertificate(FILLER, "P", date(2028, 12, 31)),
        FillerCertificate(FILLER_EXPIRED, "P", date(2025, 12, 31)),
        FillerCertificate(FILLER_WRONG_CATEGORY, "R1", date(2028, 12, 31)),
    ]
    return LocalRegistry(cylinders, [LPG_15KG], fillers, synced_at)
