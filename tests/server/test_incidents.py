"""One incident, one review item: a fill that broke a rule rides on its violation's item.

Everything goes through the real ingest route over HTTP (signed device batches) and the
review API, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from contract.codes import ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    EventBatch,
    StationFillEvent,
    StationFillPayload,
    StationViolationEvent,
    StationViolationPayload,
)
from jifang.cli import app as cli
from server.tables import AuditEntry, FillLink
from tests.server.conftest import World
from tests.server.helpers import DeviceClient, batch_of

START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
CODE = "CYL-0001"


def station(world: World, device_id: str = "station-01") -> DeviceClient:
    """A filling-station device registered on the live server."""
    made = world.call(
        "admin",
        "POST",
        "/api/v1/devices",
        json={"device_id": device_id, "kind": "filling_station", "site_id": "site-1"},
    )
    assert made.status_code == 201, made.text
    return DeviceClient(world.http, device_id, made.json()["device_key"])


def violation(
    device: DeviceClient,
    seq: int,
    at_s: float,
    reason: ReasonCode = ReasonCode.OVERFILL,
    scale: str = "S101",
    code: str | None = CODE,
) -> StationViolationEvent:
    """A station violation `at_s` seconds after START."""
    return StationViolationEvent(
        event_id=uuid7(),
        device_id=device.device_id,
        seq=seq,
        occurred_at=START + timedelta(seconds=at_s),
        reason=reason,
        severity=Severity.CRITICAL,
        payload=StationViolationPayload(
            scale_id=scale, cylinder_code=code, scanned_code=code, observed=16.2, limit=14.5
        ),
    )


def fill(
    device: DeviceClient,
    seq: int,
    reason: ReasonCode,
    violations: tuple[StationViolationEvent, ...] = (),
    start_s: float = 3.0,
    end_s: float = 25.0,
    scale: str = "S101",
) -> StationFillEvent:
    """A fill from START+start_s to START+end_s that names `violations`."""
    return StationFillEvent(
        event_id=uuid7(),
        device_id=device.device_id,
        seq=seq,
        occurred_at=START + timedelta(seconds=end_s),
        reason=reason,
        severity=Severity.CRITICAL,
        payload=StationFillPayload(
            scale_id=scale,
            cylinder_code=CODE,
            scanned_code=CODE,
            tare_kg=15.1,
            net_kg=16.2,
            rated_fill_kg=14.5,
            started_at=START + timedelta(seconds=start_s),
            ended_at=START + timedelta(seconds=end_s),
            filler_operator_id="op-7",
            violation_ids=tuple(v.event_id for v in violations),
        ),
    )


def post(device: DeviceClient, *events: Any) -> None:
    answer = device.post_batch(batch_of(device.device_id, list(events)))
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["accepted"]) == len(events)


def post_as_old(device: DeviceClient, version: str, *events: Any) -> None:
    """Deliver the events as an agent before schema 1.3 writes them: no `violation_ids`."""
    batch = json.loads(batch_of(device.device_id, list(events)).model_dump_json())
    batch["schema_version"] = version
    for event in batch["events"]:
        event["schema_version"] = version
        event["payload"].pop("violation_ids", None)
    body = json.dumps(batch).encode()
    answer = device.request("POST", "/api/v1/events", body, {"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text


def queue(world: World) -> list[dict[str, Any]]:
    answer = world.call("supervisor", "GET", "/api/v1/review/events")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()
    return items


def backlog(world: World) -> dict[str, float]:
    """The review backlog gauge per severity, from /metrics."""
    text = world.call("admin", "GET", "/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("jifang_review_backlog{"):
            severity = line.split('severity="', 1)[1].split('"', 1)[0]
            out[severity] = float(line.rsplit(" ", 1)[1])
    return out


def audit_of(world: World, action: str) -> list[AuditEntry]:
    with world.app.state.sessions() as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def verify_chain(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = world.app.state.settings
    monkeypatch.setenv("JIFANG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("JIFANG_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(cli, ["server", "audit", "verify"])
    assert result.exit_code == 0, result.output


def test_a_violating_fill_makes_one_review_item(world: World) -> None:
    device = station(world)
    over = violation(device, 0, 25.0)
    filled = fill(device, 1, ReasonCode.OVERFILL, (over,))
    post(device, over, filled)
    items = queue(world)
    assert [(i["event_id"], i["kind"], i["reason"]) for i in items] == [
        (str(over.event_id), "station.violation", "OVERFILL")
    ]
    item = items[0]
    assert item["covers"] == [str(filled.event_id)]
    assert item["fill"]["event_id"] == str(filled.event_id)
    assert item["fill"]["reason"] == "OVERFILL"
    payload = item["fill"]["body"]["payload"]
    assert (payload["cylinder_code"], payload["net_kg"], payload["rated_fill_kg"]) == (
        CODE,
        16.2,
        14.5,
    )
    # The fill is still stored and flagged, but it is reviewed on the violation's item.
    covered = world.call("supervisor", "GET", f"/api/v1/review/events/{filled.event_id}")
    assert covered.status_code == 409
    assert covered.json()["detail"] == "covered by another review item"
    assert covered.headers["Location"] == f"/api/v1/review/events/{over.event_id}"
    refused = world.call(
        "supervisor",
        "POST",
        f"/api/v1/review/events/{filled.event_id}/decisions",
        json={"outcome": "false_alarm"},
    )
    assert refused.status_code == 409
    assert backlog(world) == {"critical": 1.0}
    with world.app.state.sessions() as session:
        link = session.get(FillLink, ("station-01", str(over.event_id)))
        assert link is not None and link.fill_id == str(filled.event_id)
        assert link.matched_by == "device"
    [entry] = audit_of(world, "incident.link")
    assert entry.target == f"event:{over.event_id}"
    assert json.loads(entry.data)["fill"] == str(filled.event_id)


def test_fill_first_then_its_violation_in_a_later_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = station(world)
    over = violation(device, 0, 25.0)
    filled = fill(device, 1, ReasonCode.OVERFILL, (over,))
    post(device, filled)  # the violation is still in the outbox
    # Until the violation is stored the fill is its own item: nothing is hidden meanwhile.
    assert [i["event_id"] for i in queue(world)] == [str(filled.event_id)]
    fill_path = f"/api/v1/review/events/{filled.event_id}"
    assert world.call("supervisor", "POST", f"{fill_path}/claim").status_code == 200
    early = world.call(
        "supervisor", "POST", f"{fill_path}/decisions", json={"outcome": "needs_follow_up"}
    )
    assert early.status_code == 201, early.text
    assert world.call("supervisor", "POST", f"{fill_path}/reviewed").status_code == 204

    post(device, over)
    items = queue(world)
    assert [i["event_id"] for i in items] == [str(over.event_id)]
    item = items[0]
    # What was done on the fill moved onto the incident's item; the decision still counts.
    assert item["review_status"] == "decided"
    assert item["latest_outcome"] == "needs_follow_up"
    assert item["reviewed_by_me"] is True
    assert item["claimed_by"] is not None
    assert item["covers"] == [str(filled.event_id)]
    item_path = f"/api/v1/review/events/{over.event_id}"
    history = world.call("supervisor", "GET", f"{item_path}/decisions").json()
    assert [(d["event_id"], d["outcome"]) for d in history] == [
        (str(filled.event_id), "needs_follow_up")
    ]
    later = world.call(
        "admin", "POST", f"{item_path}/decisions", json={"outcome": "confirmed_violation"}
    )
    assert later.status_code == 201, later.text
    assert later.json()["supersedes"] == early.json()["id"]
    again = world.call("supervisor", "GET", item_path).json()
    assert again["latest_outcome"] == "confirmed_violation"

    # The audit trail: the link carried the review over, and the decision covers both events.
    [link] = audit_of(world, "incident.link")
    carried = json.loads(link.data)
    assert carried["folded"] is True and carried["carried"]["review_status"] == "decided"
    decision = audit_of(world, "review.decision")[-1]
    assert decision.target == f"event:{over.event_id}"
    assert json.loads(decision.data)["covers"] == [str(filled.event_id)]
    bundle = world.call("supervisor", "GET", f"/api/v1/events/{over.event_id}/bundle").json()
    content = bundle["content"]
    assert [e["event_id"] for e in content["covers"]] == [str(filled.event_id)]
    assert [d["outcome"] for d in content["decisions"]] == [
        "needs_follow_up",
        "confirmed_violation",
    ]
    actions = [e["action"] for e in content["audit_entries"]]
    assert actions.count("events.ingest") == 2 and "incident.link" in actions
    from server.bundle import verify

    assert verify(bundle) == []
    verify_chain(world, monkeypatch)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("order", ["violation_first", "fill_first"])
def test_old_agent_events_are_matched_on_the_server(world: World, order: str, version: str) -> None:
    device = station(world)
    over = violation(device, 0, 25.0)
    elsewhere = violation(device, 1, 20.0, scale="S102")  # the same moment on another scale
    other_code = violation(device, 2, 10.0, reason=ReasonCode.FILLER_ABSENT, code="CYL-0999")
    filled = fill(device, 3, ReasonCode.OVERFILL)
    if order == "violation_first":
        post_as_old(device, version, over, elsewhere, other_code)
        post_as_old(device, version, filled)
    else:
        post_as_old(device, version, filled)
        post_as_old(device, version, over, elsewhere, other_code)
    items = {i["event_id"]: i for i in queue(world)}
    assert set(items) == {str(over.event_id), str(elsewhere.event_id), str(other_code.event_id)}
    assert items[str(over.event_id)]["covers"] == [str(filled.event_id)]
    assert items[str(elsewhere.event_id)]["fill"] is None
    assert items[str(other_code.event_id)]["fill"] is None
    with world.app.state.sessions() as session:
        links = list(session.scalars(select(FillLink)))
    assert [(lk.violation_id, lk.fill_id, lk.matched_by) for lk in links] == [
        (str(over.event_id), str(filled.event_id), "window")
    ]


def test_a_fill_that_broke_two_rules(world: World) -> None:
    device = station(world)
    unscanned = violation(device, 0, 3.0, reason=ReasonCode.UNSCANNED_FILL)
    absent = violation(device, 1, 12.0, reason=ReasonCode.FILLER_ABSENT)
    filled = fill(device, 2, ReasonCode.UNSCANNED_FILL, (unscanned, absent))
    post(device, absent, filled)
    post(device, unscanned)
    items = {i["event_id"]: i for i in queue(world)}
    # Two rules broken: two items. The fill repeats the first one and rides on it; the second
    # shows the fill too but does not take the fill's review.
    assert set(items) == {str(unscanned.event_id), str(absent.event_id)}
    assert items[str(unscanned.event_id)]["covers"] == [str(filled.event_id)]
    assert items[str(absent.event_id)]["covers"] == []
    assert items[str(absent.event_id)]["fill"]["event_id"] == str(filled.event_id)
    folded = [json.loads(e.data)["folded"] for e in audit_of(world, "incident.link")]
    assert sorted(folded) == [False, True]


def test_a_fill_cannot_take_over_another_devices_violation(world: World) -> None:
    first, second = station(world, "station-01"), station(world, "station-02")
    over = violation(first, 0, 25.0)
    post(first, over)
    intruder = fill(second, 0, ReasonCode.OVERFILL, (over,))
    post(second, intruder)
    assert {i["event_id"] for i in queue(world)} == {str(over.event_id), str(intruder.event_id)}
    assert all(i["covers"] == [] for i in queue(world))


def test_a_fill_whose_violation_never_arrives_stays_queued(world: World) -> None:
    device = station(world)
    lost = violation(device, 0, 25.0)
    filled = fill(device, 1, ReasonCode.OVERFILL, (lost,))
    post(device, filled)
    assert [i["event_id"] for i in queue(world)] == [str(filled.event_id)]
    assert backlog(world) == {"critical": 1.0}


def test_a_fill_naming_a_bad_violation_id_is_refused_whole(world: World) -> None:
    device = station(world)
    good = fill(device, 0, ReasonCode.OVERFILL)
    batch = json.loads(batch_of(device.device_id, [good]).model_dump_json())
    batch["events"][0]["payload"]["violation_ids"] = ["not-a-uuid"]
    body = json.dumps(batch).encode()
    answer = device.request("POST", "/api/v1/events", body, {"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert "violation_ids" in answer.json()["detail"]
    assert queue(world) == []
    with pytest.raises(ValueError, match="violation_ids"):
        EventBatch.model_validate_json(body)
