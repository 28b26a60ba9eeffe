"""The review API: filter, claim, append-only decisions, per-user reviewed state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from server.tables import Decision
from tests.server.conftest import PASSWORD, World
from tests.server.helpers import authorized_event, batch_of, denied_event, violation_event


def _seed(world: World) -> dict[str, str]:
    denied = denied_event("crane-01", 1)
    ok = authorized_event("crane-01", 2)
    overfill = violation_event("forklift-01", 1)
    world.crane.post_batch(batch_of("crane-01", [denied, ok]))
    world.forklift.post_batch(batch_of("forklift-01", [overfill]))
    return {
        "denied": str(denied.event_id),
        "ok": str(ok.event_id),
        "overfill": str(overfill.event_id),
    }


def _ids(world: World, **params: object) -> set[str]:
    response = world.call("supervisor", "GET", "/api/v1/review/events", params=params)
    assert response.status_code == 200, response.text
    return {e["event_id"] for e in response.json()}


def test_filters(world: World) -> None:
    ids = _seed(world)
    assert _ids(world) == {ids["denied"], ids["overfill"]}  # informational events stay out
    assert _ids(world, device="crane-01") == {ids["denied"]}
    assert _ids(world, kind="station.violation") == {ids["overfill"]}
    assert _ids(world, severity="critical") == {ids["overfill"]}
    assert _ids(world, site="site-1") == {ids["denied"], ids["overfill"]}
    assert _ids(world, site="site-2") == set()
    assert _ids(world, status="open") == {ids["denied"], ids["overfill"]}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert _ids(world, since=future) == set()
    assert _ids(world, since=past, until=future) == {ids["denied"], ids["overfill"]}
    bad = world.call("supervisor", "GET", "/api/v1/review/events", params={"severity": "huge"})
    assert bad.status_code == 422
    informational = world.call("supervisor", "GET", f"/api/v1/review/events/{ids['ok']}")
    assert informational.status_code == 404
    assert informational.json()["detail"] == "flagged event not found"


def test_claim_is_exclusive(world: World) -> None:
    ids = _seed(world)
    claimed = world.call("supervisor", "POST", f"/api/v1/review/events/{ids['denied']}/claim")
    assert claimed.status_code == 200 and claimed.json()["review_status"] == "claimed"
    other = world.call("admin", "POST", f"/api/v1/review/events/{ids['denied']}/claim")
    assert other.status_code == 409 and other.json()["detail"] == "claimed by another reviewer"
    assert _ids(world, status="claimed") == {ids["denied"]}


def test_decisions_are_append_only(world: World) -> None:
    ids = _seed(world)
    path = f"/api/v1/review/events/{ids['overfill']}/decisions"
    first = world.call(
        "supervisor", "POST", path, json={"outcome": "needs_follow_up", "comment": "核实"}
    )
    assert first.status_code == 201, first.text
    second = world.call(
        "admin", "POST", path, json={"outcome": "confirmed_violation", "comment": "超装"}
    )
    assert second.json()["supersedes"] == first.json()["id"]
    history = world.call("supervisor", "GET", path).json()
    assert [d["outcome"] for d in history] == ["needs_follow_up", "confirmed_violation"]
    assert history[0]["comment"] == "核实"  # the superseded decision is kept as it was
    event = world.call("supervisor", "GET", f"/api/v1/review/events/{ids['overfill']}").json()
    assert event["latest_outcome"] == "confirmed_violation"
    assert event["review_status"] == "decided"
    assert event["body"]["payload"]["observed"] == 16.2
    bad = world.call("supervisor", "POST", path, json={"outcome": "whatever"})
    assert bad.status_code == 422
    with world.app.state.sessions() as session:
        assert len(session.scalars(select(Decision)).all()) == 2
    assert _ids(world, status="decided") == {ids["overfill"]}


def test_reviewed_state_is_per_user(world: World) -> None:
    ids = _seed(world)
    mark = world.call("supervisor", "POST", f"/api/v1/review/events/{ids['denied']}/reviewed")
    assert mark.status_code == 204
    mine = world.call("supervisor", "GET", "/api/v1/review/events").json()
    assert {e["event_id"]: e["reviewed_by_me"] for e in mine} == {
        ids["denied"]: True,
        ids["overfill"]: False,
    }
    theirs = world.call("admin", "GET", "/api/v1/review/events").json()
    assert not any(e["reviewed_by_me"] for e in theirs)
    assert _ids(world, unreviewed_by_me="true") == {ids["overfill"]}
    world.call("supervisor", "DELETE", f"/api/v1/review/events/{ids['denied']}/reviewed")
    assert _ids(world, unreviewed_by_me="true") == {ids["denied"], ids["overfill"]}


def test_second_supervisor_sees_their_own_state(world: World) -> None:
    ids = _seed(world)
    made = world.call(
        "admin",
        "POST",
        "/api/v1/users",
        json={"username": "sup2", "password": PASSWORD, "role": "supervisor"},
    )
    assert made.status_code == 201
    token = world.http.post(
        "/api/v1/auth/login", json={"username": "sup2", "password": PASSWORD}
    ).json()
    world.call("supervisor", "POST", f"/api/v1/review/events/{ids['overfill']}/reviewed")
    listed = world.http.get(
        "/api/v1/review/events", headers={"Authorization": f"Bearer {token['access_token']}"}
    ).json()
    assert not any(e["reviewed_by_me"] for e in listed)
