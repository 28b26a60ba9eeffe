"""Deny by default: every route, every role, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from server.domain import Role
from tests.server.conftest import World

D, S, C, A = Role.DEVICE, Role.SUPERVISOR, Role.CERT_OFFICE, Role.ADMIN
PUBLIC: frozenset[Role] = frozenset()
STAFF = frozenset({S, C, A})
REVIEW = frozenset({S, A})
OFFICE = frozenset({C, A})
ADMIN = frozenset({A})
DEVICE = frozenset({D})

# Who may call what. Adding a route without adding it here fails the first test.
EXPECTED: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): ADMIN,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): STAFF,
    ("GET", "/api/v1/auth/me"): STAFF,
    ("POST", "/api/v1/users"): ADMIN,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/enterprises"): ADMIN,
    ("GET", "/api/v1/enterprises"): STAFF,
    ("POST", "/api/v1/sites"): ADMIN,
    ("GET", "/api/v1/sites"): STAFF,
    ("POST", "/api/v1/stations"): ADMIN,
    ("GET", "/api/v1/stations"): STAFF,
    ("POST", "/api/v1/scales"): ADMIN,
    ("GET", "/api/v1/scales"): STAFF,
    ("POST", "/api/v1/cylinder-types"): ADMIN,
    ("GET", "/api/v1/cylinder-types"): STAFF,
    ("POST", "/api/v1/cylinders"): ADMIN,
    ("GET", "/api/v1/cylinders/{code}"): STAFF,
    ("POST", "/api/v1/devices"): ADMIN,
    ("GET", "/api/v1/devices"): STAFF,
    ("PATCH", "/api/v1/devices/{device_id}"): ADMIN,
    ("GET", "/api/v1/devices/{device_id}/gaps"): STAFF,
    ("GET", "/api/v1/devices/{device_id}/gallery"): DEVICE,
    ("GET", "/api/v1/devices/{device_id}/station-registry"): DEVICE,
    ("GET", "/api/v1/devices/{device_id}/config"): DEVICE,
    ("POST", "/api/v1/devices/{device_id}/heartbeat"): DEVICE,
    ("GET", "/api/v1/operators"): STAFF,
    ("GET", "/api/v1/operators/{operator_id}"): STAFF,
    ("PUT", "/api/v1/operators/{operator_id}/sites"): OFFICE,
    ("POST", "/api/v1/operators/{operator_id}/templates"): OFFICE,
    ("GET", "/api/v1/certificates/{number}"): STAFF,
    ("POST", "/api/v1/certificates/{number}/revoke"): OFFICE,
    ("POST", "/api/v1/certificates/{number}/suspend"): OFFICE,
    ("POST", "/api/v1/certificates/{number}/reinstate"): OFFICE,
    ("POST", "/api/v1/sync/operators"): OFFICE,
    ("POST", "/api/v1/events"): DEVICE,
    ("PUT", "/api/v1/evidence/{sha256}"): DEVICE,
    ("GET", "/api/v1/events/{event_id}/bundle"): REVIEW,
    ("GET", "/api/v1/review/events"): REVIEW,
    ("GET", "/api/v1/review/events/{event_id}"): REVIEW,
    ("POST", "/api/v1/review/events/{event_id}/claim"): REVIEW,
    ("POST", "/api/v1/review/events/{event_id}/decisions"): REVIEW,
    ("GET", "/api/v1/review/events/{event_id}/decisions"): REVIEW,
    ("POST", "/api/v1/review/events/{event_id}/reviewed"): REVIEW,
    ("DELETE", "/api/v1/review/events/{event_id}/reviewed"): REVIEW,
    ("GET", "/api/v1/audit/verify"): ADMIN,
    ("POST", "/api/v1/audit/verify"): ADMIN,
    ("GET", "/api/v1/audit/checkpoint"): ADMIN,
    # Web pages (server/web): same deny-by-default guard, answered with pages not JSON.
    ("GET", "/"): STAFF,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): STAFF,
    ("GET", "/lang/{lang}"): PUBLIC,
    ("GET", "/review"): REVIEW,
    ("GET", "/review/evidence/{sha256}"): REVIEW,
    ("GET", "/review/{event_id}"): REVIEW,
    ("POST", "/review/{event_id}/decision"): REVIEW,
    ("POST", "/review/{event_id}/reviewed"): REVIEW,
    ("POST", "/review/{event_id}/claim"): REVIEW,
    ("GET", "/operators"): STAFF,
    ("GET", "/operators/{operator_id}"): STAFF,
    ("GET", "/operators/{operator_id}/templates/{template_id}/photo"): STAFF,
    ("POST", "/operators/{operator_id}/templates/{template_id}/remove"): STAFF,
    ("GET", "/dashboard"): REVIEW,
    ("GET", "/openapi.json"): ADMIN,
    ("GET", "/docs"): ADMIN,
    ("GET", "/redoc"): ADMIN,
}
PARAMS = {
    "{device_id}": "crane-01",
    "{event_id}": "0190a0a0-0000-7000-8000-000000000000",
    "{number}": "T-none",
    "{operator_id}": "op-none",
    "{code}": "CYL-none",
    "{sha256}": "0" * 64,
    "{template_id}": "tpl-none",
    "{lang}": "en",
}
CALLERS = ["anonymous", *[r.value for r in Role]]


def test_every_route_declares_the_expected_roles(world: World) -> None:
    assert world.app.state.route_roles == EXPECTED


def _path(template: str) -> str:
    for key, value in PARAMS.items():
        template = template.replace(key, value)
    return template


@pytest.mark.parametrize("caller", CALLERS)
def test_each_role_is_refused_where_it_must_be(world: World, caller: str) -> None:
    for (method, template), allowed in sorted(EXPECTED.items()):
        if template == "/api/v1/auth/logout":
            continue  # would end the caller's own session; covered below
        path = _path(template)
        if caller == "device":
            response = world.crane.request(
                method, path, b"{}", {"Content-Type": "application/json"}
            )
        elif caller == "anonymous":
            response = world.http.request(method, path, json={})
        else:
            response = world.call(caller, method, path, json={})
        where = f"{caller} {method} {template} -> {response.status_code} {response.text[:120]}"
        if _is_page(template):
            _check_page(caller, allowed, response, where)
        elif not allowed:
            assert response.status_code not in (401, 403), where
        elif caller == "anonymous":
            assert response.status_code == 401, where
            assert response.json()["detail"] in ("not authenticated", "device signature missing"), (
                where
            )
        elif Role(caller) in allowed:
            assert response.status_code not in (401, 403), where
        else:
            assert response.status_code == 403, where
            assert response.json()["detail"] == "role not allowed", where


def _is_page(template: str) -> bool:
    return not template.startswith("/api/") and template not in ("/healthz", "/readyz", "/metrics")


def _check_page(
    caller: str, allowed: frozenset[Role], response: httpx.Response, where: str
) -> None:
    """Pages redirect anonymous visitors to the login form and answer a 403 page otherwise."""
    if not allowed:
        assert response.status_code not in (401, 403), where
    elif caller == "anonymous":
        assert response.status_code == 303, where
        assert response.headers["location"].startswith("/login"), where
    elif Role(caller) in allowed:
        assert response.status_code not in (401, 403), where
    else:
        assert response.status_code == 403, where


def test_logout_ends_the_session(world: World) -> None:
    assert world.call("supervisor", "GET", "/api/v1/auth/me").json()["role"] == "supervisor"
    assert world.call("supervisor", "POST", "/api/v1/auth/logout").status_code == 204
    response = world.call("supervisor", "GET", "/api/v1/auth/me")
    assert response.status_code == 401 and response.json()["detail"] == "invalid or expired token"
    assert world.crane.request("POST", "/api/v1/auth/logout").status_code == 403


def test_wrong_password_is_refused(world: World) -> None:
    response = world.http.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "nope-nope"}
    )
    assert response.status_code == 401 and response.json()["detail"] == "wrong username or password"


def test_a_route_without_roles_stops_the_app(settings, engine) -> None:  # noqa: ANN001
    from fastapi import APIRouter

    from server.api.routes import ops
    from server.app import create_app

    stray = APIRouter()

    @stray.get("/stray")
    def _stray() -> None:
        return None

    ops.router.routes.extend(stray.routes)
    try:
        with pytest.raises(RuntimeError, match="/stray declares no roles"):
            create_app(settings, face_engine=engine)
    finally:
        del ops.router.routes[-1]
