"""The filling rules: pre-fill checks behind the fill-enable interlock, and checks during a fill.

Inputs arrive as domain records (scans, logins, scale readings, zone observations) stamped
with agent time in seconds; every rule that fires becomes one event with its reason code.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo
from enum import StrEnum
from typing import Protocol

from contract.codes import CylinderStatus, ReasonCode
from contract.messages import StationFillPayload, StationViolationPayload
from edge_agent.station.config import StationConfig
from edge_agent.station.domain import (
    CodeScan,
    FillerLogin,
    ScaleReading,
    ZoneObservation,
)
from edge_agent.station.events import EventFactory
from edge_agent.station.registry import CylinderRegistry

logger = logging.getLogger(__name__)


class InterlockError(Exception):
    """A scale's fill-enable could not be written."""


class FillInterlock(Protocol):
    """Writes a scale's fill-enable output (the scan-to-fill interlock)."""

    def set_fill_enable(self, scale_id: str, enabled: bool) -> None:
        """Set the output or raise InterlockError."""
        ...


class ScalePhase(StrEnum):
    """Where a scale is in the fill cycle."""

    EMPTY = "empty"
    LOADED = "loaded"
    FILLING = "filling"
    DONE = "done"


@dataclass
class _Accepted:
    code: str
    at: float
    rated_fill_kg: float
    operator_id: str | None


@dataclass
class _Fill:
    started_at: float
    tare_kg: float
    accepted: _Accepted | None
    last_rise_at: float
    peak_kg: float
    camera_seen: bool = False
    fired: list[ReasonCode] = field(default_factory=list)
    violation_ids: list[uuid.UUID] = field(default_factory=list)
    """The violation events of this fill: its fill event references them (one incident)."""


@dataclass
class _ScaleState:
    phase: ScalePhase = ScalePhase.EMPTY
    tare_kg: float = 0.0
    gross_kg: float = 0.0
    accepted: _Accepted | None = None
    filler: FillerLogin | None = None
    fill: _Fill | None = None
    enabled: bool = False
    person_last_seen: float | None = None
    cylinder_in_view: bool = False
    camera_reads: Counter[str] = field(default_factory=Counter)
    swap_fired: bool = False
    has_zone: bool = False


@dataclass
class ShiftCounters:
    """What the reconciliation report counts."""

    scans_accepted: int = 0
    scans_rejected: int = 0
    scans_refused_stale_registry: int = 0
    fills_scale: int = 0
    fills_camera: int = 0
    fills_ok: int = 0
    fills_by_scale: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)


class StationRules:
    """The rule engine of one station; not thread-safe (one worker owns it)."""

    def __init__(
        self,
        config: StationConfig,
        registry: CylinderRegistry,
        events: EventFactory,
        interlock: FillInterlock,
        *,
        tz: tzinfo,
    ) -> None:
        # Inspection and certificate dates are calendar dates where the station stands
        # (device.timezone), so "today" must be taken in that zone, not in UTC.
        self._tz = tz
        self._config = config
        self._rules = config.rules
        self._registry = registry
        self._events = events
        self._interlock = interlock
        self._scales = {s.id: _ScaleState() for s in config.scales}
        for zone in config.zones:
            self._scales[zone.scale_id].has_zone = True
        self._last_fill: dict[str, tuple[float, str]] = {}
        self.counters = ShiftCounters()
        for scale_id in self._scales:
            self._write_enable(scale_id, False)

    # --- helpers -------------------------------------------------------------------------

    def _on(self, reason: ReasonCode) -> bool:
        return reason.value not in self._rules.disabled

    def _today(self, at: float) -> date:
        return self._events.to_datetime(at).astimezone(self._tz).date()

    def phase(self, scale_id: str) -> ScalePhase:
        """The scale's phase in the fill cycle."""
        return self._scales[scale_id].phase

    def fill_enabled(self, scale_id: str) -> bool:
        """Whether the agent holds the scale's fill-enable on."""
        return self._scales[scale_id].enabled

    def _write_enable(self, scale_id: str, enabled: bool) -> bool:
        state = self._scales[scale_id]
        try:
            self._interlock.set_fill_enable(scale_id, enabled)
        except InterlockError:
            # Fail closed: if the write failed we cannot know the output is on.
            logger.exception("fill-enable write failed on scale %s", scale_id)
            state.enabled = False
            return False
        state.enabled = enabled
        return True

    def _violate(
        self,
        at: float,
        scale_id: str,
        reason: ReasonCode,
        *,
        code: str | None = None,
        scanned: str | None = None,
        camera: str | None = None,
        observed: float | None = None,
        limit: float | None = None,
        detail: str = "",
        fill: _Fill | None = None,
    ) -> None:
        """Emit a violation and record it against `fill` (default: the scale's current fill)."""
        if not self._on(reason):
            return
        zone = next((z.id for z in self._config.zones if z.scale_id == scale_id), None)
        event = self._events.violation(
            at,
            reason,
            StationViolationPayload(
                scale_id=scale_id,
                zone_id=zone,
                cylinder_code=code,
                scanned_code=scanned,
                camera_code=camera,
                observed=observed,
                limit=limit,
                detail=detail,
            ),
        )
        self.counters.violations[reason.value] += 1
        target = fill or self._scales[scale_id].fill
        if target is not None:
            target.fired.append(reason)
            target.violation_ids.append(event.event_id)
        logger.warning("scale %s: %s %s", scale_id, reason.value, detail)

    # --- inputs ----------------------------------------------------------------------------

    def on_login(self, login: FillerLogin) -> None:
        """A filler identified at a scale."""
        if login.scale_id not in self._scales:
            logger.warning("login for unknown scale %s ignored", login.scale_id)
            return
        self._scales[login.scale_id].filler = login

    def on_scan(self, scan: CodeScan) -> bool:
        """Run the pre-fill checks; on success the scale's fill-enable is switched on."""
        state = self._scales.get(scan.scale_id)
        if state is None:
            logger.warning("scan for unknown scale %s ignored", scan.scale_id)
            return False
        if state.phase == ScalePhase.FILLING:
            logger.warning("scan %s on scale %s during a fill ignored", scan.code, scan.scale_id)
            return False
        if self._registry_stale(scan.at):
            # Fail closed: certificates or cylinder status may have changed since the last sync.
            # No station reason code fits, so this is counted and logged, not sent as a violation.
            self.counters.scans_refused_stale_registry += 1
            state.accepted = None
            self._write_enable(scan.scale_id, False)
            logger.error(
                "scan %s on scale %s refused: registry data stale or never synced",
                scan.code,
                scan.scale_id,
            )
            return False
        refusal = self._check(scan, state)
        if refusal is not None:
            reason, detail, observed, limit = refusal
            self.counters.scans_rejected += 1
            state.accepted = None
            self._write_enable(scan.scale_id, False)
            self._violate(
                scan.at,
                scan.scale_id,
                reason,
                code=scan.code,
                scanned=scan.code,
                observed=observed,
                limit=limit,
                detail=detail,
            )
            return False
        record = self._registry.cylinder(scan.code)
        ctype = self._registry.cylinder_type(record.type_code) if record else None
        if ctype is None:
            # Registered cylinder of an unknown type: no rated fill, so no safe fill.
            self.counters.scans_rejected += 1
            self._write_enable(scan.scale_id, False)
            self._violate(
                scan.at,
                scan.scale_id,
                ReasonCode.UNREGISTERED_CYLINDER,
                code=scan.code,
                scanned=scan.code,
                detail="cylinder type not in the type table",
            )
            return False
        if not self._write_enable(scan.scale_id, True):
            state.accepted = None
            return False
        state.accepted = _Accepted(
            scan.code,
            scan.at,
            ctype.rated_fill_kg,
            state.filler.operator_id if state.filler else None,
        )
        state.swap_fired = False
        self.counters.scans_accepted += 1
        logger.info("scale %s: %s accepted, fill enabled", scan.scale_id, scan.code)
        return True

    def _registry_stale(self, at: float) -> bool:
        synced = self._registry.synced_at()
        if synced is None:
            return True
        age = self._events.to_datetime(at) - synced
        return age > timedelta(hours=self._rules.registry_max_age_h)

    def _check(
        self, scan: CodeScan, state: _ScaleState
    ) -> tuple[ReasonCode, str, float | None, float | None] | None:
        today = self._today(scan.at)
        record = self._registry.cylinder(scan.code)
        if record is None:
            return (ReasonCode.UNREGISTERED_CYLINDER, "code not in the registry", None, None)
        if record.status == CylinderStatus.SCRAPPED and self._on(ReasonCode.CYLINDER_SCRAPPED):
            return (ReasonCode.CYLINDER_SCRAPPED, "cylinder is scrapped", None, None)
        if record.status == CylinderStatus.SUSPENDED and self._on(ReasonCode.CYLINDER_SCRAPPED):
            # No reason code of its own: a suspended (停用) cylinder is out of service like a
            # scrapped one until the registry reinstates it.
            return (ReasonCode.CYLINDER_SCRAPPED, "cylinder is suspended (停用)", None, None)
        end_of_life = _add_years(record.manufactured_on, record.design_life_years)
        if today >= end_of_life and self._on(ReasonCode.BEYOND_DESIGN_LIFE):
            age = (today - record.manufactured_on).days / 365.25
            return (
                ReasonCode.BEYOND_DESIGN_LIFE,
                f"design life ended {end_of_life}",
                round(age, 2),
                float(record.design_life_years),
            )
        if today > record.next_inspection_due and self._on(ReasonCode.INSPECTION_OVERDUE):
            overdue = (today - record.next_inspection_due).days
            return (
                ReasonCode.INSPECTION_OVERDUE,
                f"inspection due {record.next_inspection_due}",
                float(overdue),
                0.0,
            )
        station = self._config.station_id
        if (
            record.owner_station_id != station
            and station not in record.entrusted_station_ids
            and self._on(ReasonCode.FOREIGN_CYLINDER)
        ):
            return (ReasonCode.FOREIGN_CYLINDER, f"owned by {record.owner_station_id}", None, None)
        duplicate = self._duplicate(scan)
        if duplicate is not None and self._on(ReasonCode.DUPLICATE_FILL):
            return (ReasonCode.DUPLICATE_FILL, duplicate, None, None)
        if self._on(ReasonCode.UNCERTIFIED_FILLER):
            problem = self._filler_problem(state, today)
            if problem is not None:
                return (ReasonCode.UNCERTIFIED_FILLER, problem, None, None)
        return None

    def _duplicate(self, scan: CodeScan) -> str | None:
        for scale_id, other in self._scales.items():
            if scale_id == scan.scale_id:
                continue
            active = other.fill.accepted if other.fill else other.accepted
            if active is not None and active.code == scan.code and other.phase != ScalePhase.DONE:
                return f"code is active on scale {scale_id}"
        last = self._last_fill.get(scan.code)
        if last is not None and scan.at - last[0] < self._rules.duplicate_window_s:
            return f"filled on scale {last[1]} {scan.at - last[0]:.0f} s ago"
        return None

    def _filler_problem(self, state: _ScaleState, today: date) -> str | None:
        if state.filler is None:
            return "no filler identified at the scale"
        cert = self._registry.filler(state.filler.operator_id)
        if cert is None:
            return f"filler {state.filler.operator_id} has no certificate"
        if cert.revoked:
            return f"certificate of {cert.operator_id} revoked"
        if cert.category != self._rules.required_certificate:
            return f"certificate category {cert.category}, needs {self._rules.required_certificate}"
        if cert.valid_until < today:
            return f"certificate expired {cert.valid_until}"
        return None

    def on_observation(self, obs: ZoneObservation) -> None:
        """Camera evidence for a zone: presence, person, codes read."""
        state = self._scales.get(obs.scale_id)
        if state is None:
            return
        if obs.person_present:
            state.person_last_seen = obs.at
        if obs.cylinder_present:
            state.cylinder_in_view = True
            if state.fill is not None:
                state.fill.camera_seen = True
        for code in obs.codes:
            state.camera_reads[code] += 1
        self._check_swap(obs.at, obs.scale_id, state)
        self._check_absent(obs.at, obs.scale_id, state)

    def _check_swap(self, at: float, scale_id: str, state: _ScaleState) -> None:
        accepted = state.fill.accepted if state.fill else state.accepted
        if accepted is None or state.swap_fired or state.phase == ScalePhase.EMPTY:
            return
        others = [(n, c) for c, n in state.camera_reads.items() if c != accepted.code]
        if not others:
            return
        reads, code = max(others)
        if reads < self._rules.swap_min_reads:
            return
        state.swap_fired = True
        self._violate(
            at,
            scale_id,
            ReasonCode.SWAPPED_CODE,
            code=accepted.code,
            scanned=accepted.code,
            camera=code,
            observed=float(reads),
            limit=float(self._rules.swap_min_reads),
            detail=f"camera reads {code}, scanner read {accepted.code}",
        )
        if self._rules.cut_fill_on_violation:
            state.accepted = None
            self._write_enable(scale_id, False)

    def _check_absent(self, at: float, scale_id: str, state: _ScaleState) -> None:
        fill = state.fill
        if fill is None or not state.has_zone or ReasonCode.FILLER_ABSENT in fill.fired:
            return
        since = max(state.person_last_seen or fill.started_at, fill.started_at)
        absent = at - since
        if absent > self._rules.filler_absent_s:
            self._violate(
                at,
                scale_id,
                ReasonCode.FILLER_ABSENT,
                code=_code(fill),
                scanned=_code(fill),
                observed=round(absent, 2),
                limit=self._rules.filler_absent_s,
                detail="fill in progress with nobody at the scale",
            )
            if self._rules.cut_fill_on_violation:
                self._write_enable(scale_id, False)

    def on_scale_fault(self, scale_id: str, message: str) -> None:
        """A scale could not be read: without telemetry no fill may be enabled (fail closed)."""
        state = self._scales.get(scale_id)
        if state is None:
            return
        logger.warning("scale %s unreadable, fill-enable dropped: %s", scale_id, message)
        if state.phase != ScalePhase.FILLING:
            state.accepted = None
        if state.enabled:
            self._write_enable(scale_id, False)

    def on_reading(self, reading: ScaleReading) -> None:
        """Scale telemetry: drives the fill cycle."""
        state = self._scales.get(reading.scale_id)
        if state is None:
            return
        r = self._rules
        gross = reading.gross_kg
        state.gross_kg = gross
        if (
            state.accepted is not None
            and state.phase != ScalePhase.FILLING
            and reading.at - state.accepted.at > r.scan_valid_s
        ):
            logger.info("scale %s: scan %s expired", reading.scale_id, state.accepted.code)
            state.accepted = None
            self._write_enable(reading.scale_id, False)
        if gross < r.cylinder_min_kg:
            if state.phase == ScalePhase.FILLING:
                self._end_fill(reading.at, reading.scale_id, state)
            if state.phase != ScalePhase.EMPTY:
                self._cylinder_removed(reading.scale_id, state)
            return
        if state.phase == ScalePhase.EMPTY:
            state.phase = ScalePhase.LOADED
            state.tare_kg = gross
            return
        if state.phase == ScalePhase.LOADED:
            if gross - state.tare_kg >= r.fill_start_delta_kg:
                self._start_fill(reading.at, reading.scale_id, state)
            elif abs(gross - state.tare_kg) <= r.rise_epsilon_kg or gross < state.tare_kg:
                state.tare_kg = gross
            return
        if state.phase == ScalePhase.FILLING and state.fill is not None:
            fill = state.fill
            if gross > fill.peak_kg + r.rise_epsilon_kg:
                fill.peak_kg = gross
                fill.last_rise_at = reading.at
                accepted = fill.accepted
                if (
                    accepted is not None
                    and state.enabled
                    and gross - fill.tare_kg > accepted.rated_fill_kg + r.overfill_tolerance_kg
                ):
                    # Past the rated fill: close the valve now, report at the end of the fill.
                    self._write_enable(reading.scale_id, False)
            elif reading.at - fill.last_rise_at >= r.fill_end_stable_s:
                self._end_fill(reading.at, reading.scale_id, state)
            self._check_absent(reading.at, reading.scale_id, state)

    def _start_fill(self, at: float, scale_id: str, state: _ScaleState) -> None:
        state.phase = ScalePhase.FILLING
        accepted = state.accepted
        state.fill = _Fill(
            at, state.tare_kg, accepted, at, state.gross_kg, camera_seen=state.cylinder_in_view
        )
        if accepted is None:
            camera = state.camera_reads.most_common(1)[0][0] if state.camera_reads else None
            self._violate(
                at,
                scale_id,
                ReasonCode.UNSCANNED_FILL,
                code=camera,
                camera=camera,
                observed=round(state.gross_kg - state.tare_kg, 3),
                limit=self._rules.fill_start_delta_kg,
                detail="weight rising with no accepted scan",
            )
        else:
            self._last_fill[accepted.code] = (at, scale_id)
            state.accepted = None
        logger.info("scale %s: fill started (tare %.2f kg)", scale_id, state.tare_kg)

    def _end_fill(self, at: float, scale_id: str, state: _ScaleState) -> None:
        fill = state.fill
        if fill is None:
            return
        state.phase = ScalePhase.DONE
        state.fill = None
        self._write_enable(scale_id, False)
        net = max(0.0, fill.peak_kg - fill.tare_kg)
        accepted = fill.accepted
        rated = accepted.rated_fill_kg if accepted else None
        if rated is not None and net > rated + self._rules.overfill_tolerance_kg:
            self._violate(
                at,
                scale_id,
                ReasonCode.OVERFILL,
                code=accepted.code if accepted else None,
                scanned=accepted.code if accepted else None,
                observed=round(net, 3),
                limit=round(rated + self._rules.overfill_tolerance_kg, 3),
                detail=f"net {net:.2f} kg, rated {rated:.2f} kg",
                fill=fill,
            )
        c = self.counters
        c.fills_scale += 1
        c.fills_by_scale[scale_id] += 1
        if fill.camera_seen:
            c.fills_camera += 1
        reason = fill.fired[0] if fill.fired else ReasonCode.FILL_OK
        if reason == ReasonCode.FILL_OK:
            c.fills_ok += 1
        camera = state.camera_reads.most_common(1)[0][0] if state.camera_reads else None
        self._events.fill(
            at,
            reason,
            StationFillPayload(
                scale_id=scale_id,
                cylinder_code=accepted.code if accepted else camera,
                scanned_code=accepted.code if accepted else None,
                camera_code=camera,
                tare_kg=round(fill.tare_kg, 3),
                net_kg=round(net, 3),
                rated_fill_kg=rated,
                started_at=self._events.to_datetime(fill.started_at),
                ended_at=self._events.to_datetime(at),
                filler_operator_id=accepted.operator_id if accepted else None,
                violation_ids=tuple(fill.violation_ids),
            ),
        )
        logger.info("scale %s: fill ended, net %.2f kg (%s)", scale_id, net, reason.value)

    def _cylinder_removed(self, scale_id: str, state: _ScaleState) -> None:
        state.phase = ScalePhase.EMPTY
        state.accepted = None
        state.camera_reads.clear()
        state.cylinder_in_view = False
        state.swap_fired = False
        if state.enabled:
            self._write_enable(scale_id, False)


def _code(fill: _Fill) -> str | None:
    return fill.accepted.code if fill.accepted else None


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)
