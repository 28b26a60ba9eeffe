"""The shift reconciliation report: fills seen by camera and scale, scans accepted, violations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_agent.station.rules import ShiftCounters


@dataclass(frozen=True)
class ShiftReport:
    """Counts for one shift; `unconfirmed_fills` are scale fills the camera never saw."""

    station_id: str
    started_at: datetime
    ended_at: datetime
    fills_scale: int
    fills_camera: int
    fills_ok: int
    scans_accepted: int
    scans_rejected: int
    scans_refused_stale_registry: int
    fills_by_scale: dict[str, int]
    violations: dict[str, int]

    @property
    def unconfirmed_fills(self) -> int:
        """Fills the scale saw but no camera confirmed (camera down or zone miscalibrated)."""
        return self.fills_scale - self.fills_camera

    @property
    def violation_total(self) -> int:
        """All violations of the shift."""
        return sum(self.violations.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "station_id": self.station_id,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "fills_scale": self.fills_scale,
            "fills_camera": self.fills_camera,
            "unconfirmed_fills": self.unconfirmed_fills,
            "fills_ok": self.fills_ok,
            "scans_accepted": self.scans_accepted,
            "scans_rejected": self.scans_rejected,
            "scans_refused_stale_registry": self.scans_refused_stale_registry,
            "fills_by_scale": dict(sorted(self.fills_by_scale.items())),
            "violations": dict(sorted(self.violations.items())),
        }


def build_report(
    station_id: str, counters: ShiftCounters, started_at: datetime, ended_at: datetime
) -> ShiftReport:
    """Freeze the counters of a shift into a report."""
    return ShiftReport(
        station_id=station_id,
        started_at=started_at,
        ended_at=ended_at,
        fills_scale=counters.fills_scale,
        fills_camera=counters.fills_camera,
        fills_ok=counters.fills_ok,
        scans_accepted=counters.scans_accepted,
        scans_rejected=counters.scans_rejected,
        scans_refused_stale_registry=counters.scans_refused_stale_registry,
        fills_by_scale=dict(counters.fills_by_scale),
        violations=dict(counters.violations),
    )
