"""Scenario tests: rendered frames -> zones -> rules -> events, one test per rule plus a clean shift."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from contract.codes import ReasonCode
from contract.messages import EventBatch
from edge_agent.station.domain import CylinderRecord, CylinderType, FillerCertificate
from edge_agent.station.events import MemorySink
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.runner import ScenarioResult, run_scenario
from edge_agent.station.sim.scenario import (
    Action,
    Login,
    OpenValve,
    Person,
    Place,
    Remove,
    Scan,
    Scenario,
    make_layout,
    station_config,
)

LAYOUT = make_layout(cameras=1, zones_per_camera=4)
S1, S2, S3, S4 = (c.scale_id for c in LAYOUT.cells)


def normal_fill(
    t: float,
    scale: str,
    code: str,
    *,
    label: str | None = None,
    filler: str = reg.FILLER,
    net: float = 14.0,
) -> list[Action]:
    """A filler steps up, logs in, places, scans, fills, waits and removes the cylinder."""
    return [
        Person(t, scale, True),
        Login(t, scale, filler),
        Place(t + 1, scale, label or code),
        Scan(t + 2, scale, code),
        OpenValve(t + 3, scale, net),
        Remove(t + 26, scale),
        Person(t + 27, scale, False),
    ]


def run(
    actions: list[Action], duration: float = 40.0, **overrides: object
) -> tuple[ScenarioResult, MemorySink]:
    sink = MemorySink()
    config = station_config(LAYOUT, reg.STATION_ID, **overrides)
    result = run_scenario(
        config, LAYOUT, Scenario("t", duration, tuple(actions)), reg.sim_registry(), sink
    )
    return result, sink


def reasons(sink: MemorySink) -> list[ReasonCode]:
    return [e.reason for e in sink.violations()]


def enabled_ever(result: ScenarioResult, scale: str) -> bool:
    return any(s == scale and on for s, on in result.station.scales.enable_writes)


def test_clean_shift_produces_fills_and_no_violation() -> None:
    actions = (
        normal_fill(0, S1, reg.GOOD[0])
        + normal_fill(2, S2, reg.GOOD[1])
        + normal_fill(4, S3, reg.ENTRUSTED)
        + normal_fill(30, S1, reg.GOOD[2])
        + normal_fill(32, S4, reg.GOOD[3])
    )
    result, sink = run(actions, duration=65.0)
    assert reasons(sink) == []
    fills = sink.fills()
    assert sorted(f.payload.cylinder_code for f in fills) == sorted(
        [reg.GOOD[0], reg.GOOD[1], reg.ENTRUSTED, reg.GOOD[2], reg.GOOD[3]]
    )
    assert all(f.reason == ReasonCode.FILL_OK for f in fills)
    assert all(f.payload.violation_ids == () for f in fills)
    for fill in fills:
        assert fill.payload.camera_code == fill.payload.scanned_code  # the camera read the label
        assert fill.payload.net_kg == pytest.approx(14.0, abs=0.01)
        assert fill.payload.filler_operator_id == reg.FILLER
    report = result.report
    assert (report.fills_scale, report.fills_camera, report.fills_ok) == (5, 5, 5)
    assert (report.scans_accepted, report.scans_rejected, report.violation_total) == (5, 0, 0)
    assert report.fills_by_scale == {S1: 2, S2: 1, S3: 1, S4: 1}
    # Sequence numbers and ids make a valid batch the uplink could send as it is.
    assert [e.seq for e in sink.events] == list(range(len(sink.events)))
    EventBatch(device_id="STATION-SIM", sent_at=fills[0].occurred_at, events=tuple(sink.events))
    # All fill-enables are off at the end of the shift.
    assert not any(result.rules.fill_enabled(s) for s in (S1, S2, S3, S4))


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (reg.UNREGISTERED, ReasonCode.UNREGISTERED_CYLINDER),
        (reg.FOREIGN, ReasonCode.FOREIGN_CYLINDER),
        (reg.OVERDUE, ReasonCode.INSPECTION_OVERDUE),
        (reg.SCRAPPED, ReasonCode.CYLINDER_SCRAPPED),
        (reg.TOO_OLD, ReasonCode.BEYOND_DESIGN_LIFE),
    ],
)
def test_prefill_check_refuses_and_keeps_fill_disabled(code: str, reason: ReasonCode) -> None:
    result, sink = run(normal_fill(0, S1, code) + normal_fill(0, S2, reg.GOOD[5]))
    assert reasons(sink) == [reason]
    violation = sink.violations()[0]
    assert violation.payload.scale_id == S1
    assert violation.payload.scanned_code == code
    assert violation.payload.zone_id == f"Z-{S1}"
    # The interlock never opened on S1, so no gas flowed and no fill happened there.
    assert not enabled_ever(result, S1)
    assert [f.payload.scale_id for f in sink.fills()] == [S2]
    # A refused scan is no fill's violation: the other scale's fill names none.
    assert sink.fills()[0].payload.violation_ids == ()
    assert result.report.scans_rejected == 1


@pytest.mark.parametrize("filler", [reg.FILLER_EXPIRED, reg.FILLER_WRONG_CATEGORY, "NOBODY"])
def test_uncertified_filler(filler: str) -> None:
    result, sink = run(normal_fill(0, S1, reg.GOOD[0], filler=filler))
    assert reasons(sink) == [ReasonCode.UNCERTIFIED_FILLER]
    assert not enabled_ever(result, S1)
    assert sink.fills() == []


def test_no_login_is_uncertified() -> None:
    actions = [a for a in normal_fill(0, S1, reg.GOOD[0]) if not isinstance(a, Login)]
    _, sink = run(actions)
    assert reasons(sink) == [ReasonCode.UNCERTIFIED_FILLER]


def test_unscanned_fill_through_bypass() -> None:
    actions = [
        Person(0, S1, True),
        Place(1, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, bypass=True),
        Remove(26, S1),
    ]
    _, sink = run(actions)
    assert reasons(sink) == [ReasonCode.UNSCANNED_FILL]
    violation = sink.violations()[0]
    assert violation.payload.camera_code == reg.GOOD[0]  # the camera says which cylinder it was
    fills = sink.fills()
    assert len(fills) == 1 and fills[0].reason == ReasonCode.UNSCANNED_FILL
    # One incident: the fill names the violation it broke, sent before it.
    assert fills[0].payload.violation_ids == (violation.event_id,)
    assert violation.seq < fills[0].seq


def test_a_fill_that_breaks_two_rules_names_both() -> None:
    actions = [
        Person(0, S1, True),
        Place(1, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, bypass=True),
        Person(4, S1, False),
        Remove(26, S1),
    ]
    _, sink = run(actions, rules={"filler_absent_s": 5.0})
    assert reasons(sink) == [ReasonCode.UNSCANNED_FILL, ReasonCode.FILLER_ABSENT]
    [fill] = sink.fills()
    assert fill.reason == ReasonCode.UNSCANNED_FILL
    assert fill.payload.violation_ids == tuple(v.event_id for v in sink.violations())


def test_duplicate_fill_same_code_again_within_window() -> None:
    actions = normal_fill(0, S1, reg.GOOD[0]) + normal_fill(30, S1, reg.GOOD[0])
    result, sink = run(actions, duration=65.0)
    assert reasons(sink) == [ReasonCode.DUPLICATE_FILL]
    assert len(sink.fills()) == 1
    assert result.report.scans_accepted == 1


def test_duplicate_fill_same_code_on_two_scales() -> None:
    actions = normal_fill(0, S1, reg.GOOD[0]) + normal_fill(1, S2, reg.GOOD[0])
    result, sink = run(actions)
    assert reasons(sink) == [ReasonCode.DUPLICATE_FILL]
    assert sink.violations()[0].payload.scale_id == S2
    assert not enabled_ever(result, S2)


def test_swapped_code_camera_disagrees_with_scanner() -> None:
    # The filler scans a good code but the cylinder on the scale carries another label.
    result, sink = run(normal_fill(0, S1, reg.GOOD[0], label=reg.GOOD[7]))
    assert reasons(sink) == [ReasonCode.SWAPPED_CODE]
    payload = sink.violations()[0].payload
    assert (payload.scanned_code, payload.camera_code) == (reg.GOOD[0], reg.GOOD[7])
    # The interlock was dropped before the fill finished.
    assert all(f.payload.net_kg is not None and f.payload.net_kg < 14.0 for f in sink.fills())


def test_overfill() -> None:
    result, sink = run(normal_fill(0, S1, reg.GOOD[0], net=16.0))
    assert reasons(sink) == [ReasonCode.OVERFILL]
    payload = sink.violations()[0].payload
    assert payload.observed is not None and payload.limit is not None
    assert payload.observed > payload.limit == pytest.approx(reg.LPG_15KG.rated_fill_kg + 0.2)
    # The agent cut the fill-enable as soon as the net mass passed the limit.
    assert payload.observed < 16.0
    assert sink.fills()[0].reason == ReasonCode.OVERFILL
    assert sink.fills()[0].payload.violation_ids == (sink.violations()[0].event_id,)


def test_filler_absent_during_fill() -> None:
    actions = [
        a
        for a in normal_fill(0, S1, reg.GOOD[0], net=14.0)
        if not (isinstance(a, Person) and not a.present)
    ]
    actions.append(Person(4, S1, False))
    _, sink = run(actions, rules={"filler_absent_s": 5.0})
    assert reasons(sink) == [ReasonCode.FILLER_ABSENT]
    assert sink.violations()[0].payload.observed is not None
    assert sink.violations()[0].payload.observed > 5.0


def test_disabled_rule_does_not_fire() -> None:
    _, sink = run(normal_fill(0, S1, reg.GOOD[0], net=16.0), rules={"disabled": ["OVERFILL"]})
    assert reasons(sink) == []
    assert [f.reason for f in sink.fills()] == [ReasonCode.FILL_OK]


def test_demo_shift_writes_events_and_report(tmp_path) -> None:
    import json

    from contract.messages import StationViolationEvent
    from edge_agent.station.sim.demo import main

    assert main(["--out", str(tmp_path)]) == 0
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    violations = sorted(e["reason"] for e in events if e["kind"] == "station.violation")
    assert violations == ["FOREIGN_CYLINDER", "OVERFILL", "SWAPPED_CODE", "UNSCANNED_FILL"]
    StationViolationEvent.model_validate_json(
        next(line for line in lines if "station.violation" in line)
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scans_rejected"] == 1 and report["violations"]["OVERFILL"] == 1


@pytest.mark.parametrize("synced_at", [None, reg.SYNCED_AT - timedelta(days=4)])
def test_stale_registry_refuses_every_scan(synced_at) -> None:
    sink = MemorySink()
    config = station_config(LAYOUT, reg.STATION_ID)
    scenario = Scenario("stale", 40.0, tuple(normal_fill(0, S1, reg.GOOD[0])))
    result = run_scenario(config, LAYOUT, scenario, reg.sim_registry(synced_at=synced_at), sink)
    assert not enabled_ever(result, S1)
    assert sink.fills() == []
    assert result.report.scans_refused_stale_registry == 1
    assert result.report.scans_accepted == 0


class _CertificateEndsOn:
    """The sim registry, with reg.FILLER's certificate ending on `valid_until`."""

    def __init__(self, valid_until: date) -> None:
        self._inner = reg.sim_registry()
        self._valid_until = valid_until

    def cylinder(self, code: str) -> CylinderRecord | None:
        return self._inner.cylinder(code)

    def cylinder_type(self, type_code: str) -> CylinderType | None:
        return self._inner.cylinder_type(type_code)

    def filler(self, operator_id: str) -> FillerCertificate | None:
        if operator_id == reg.FILLER:
            return FillerCertificate(operator_id, "P", self._valid_until)
        return self._inner.filler(operator_id)

    def synced_at(self) -> datetime | None:
        return self._inner.synced_at()


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("UTC", []), ("Asia/Shanghai", [ReasonCode.UNCERTIFIED_FILLER])],
)
def test_certificate_dates_are_taken_in_the_device_zone(
    zone: str, expected: list[ReasonCode]
) -> None:
    # 20:00 UTC on 31 May is already 1 June in Shanghai: a certificate valid until 31 May
    # has lapsed there, but not at a station whose device.timezone is UTC.
    sink = MemorySink()
    result = run_scenario(
        station_config(LAYOUT, reg.STATION_ID),
        LAYOUT,
        Scenario("t", 40.0, tuple(normal_fill(0, S1, reg.GOOD[0]))),
        _CertificateEndsOn(date(2026, 5, 31)),
        sink,
        start=datetime(2026, 5, 31, 20, 0, tzinfo=UTC),
        tz=ZoneInfo(zone),
    )
    assert reasons(sink) == expected
    assert enabled_ever(result, S1) == (not expected)
