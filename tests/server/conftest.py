"""Server fixtures: an app on the parametrised database, a live loopback server, users."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from server.app import create_app
from server.settings import ServerSettings
from tests.server.helpers import DeviceClient, live_server

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, model_dir: Path) -> ServerSettings:
    """Settings on the test database with a fresh data folder."""
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url, model_dir=model_dir)


@pytest.fixture
def app(settings: ServerSettings, engine) -> Iterator[FastAPI]:  # noqa: ANN001 - FaceEngine
    """The app with the session's face engine injected."""
    application = create_app(settings, face_engine=engine)
    yield application
    application.state.engine.dispose()


@dataclass
class World:
    """A running server with one user per role, an enterprise, a site and two devices."""

    base: str
    http: httpx.Client
    tokens: dict[str, str]
    crane: DeviceClient
    forklift: DeviceClient
    app: FastAPI

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def call(self, role: str, method: str, path: str, **kwargs: object) -> httpx.Response:
        return self.http.request(method, path, headers=self.as_role(role), **kwargs)  # type: ignore[arg-type]


def _bootstrap_admin(app: FastAPI) -> None:
    from server.domain import Role
    from server.security import create_user

    with app.state.sessions() as session:
        create_user(session, "admin", PASSWORD, Role.ADMIN)
        session.commit()


@pytest.fixture
def world(app: FastAPI) -> Iterator[World]:
    """Real HTTP on 127.0.0.1: users logged in, a site, a crane and a forklift registered."""
    _bootstrap_admin(app)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        tokens = {}
        login = http.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        assert login.status_code == 200, login.text
        tokens["admin"] = login.json()["access_token"]
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        for role in ("supervisor", "cert_office"):
            made = http.post(
                "/api/v1/users",
                json={"username": role, "password": PASSWORD, "role": role},
                headers=admin,
            )
            assert made.status_code == 201, made.text
            tokens[role] = http.post(
                "/api/v1/auth/login", json={"username": role, "password": PASSWORD}
            ).json()["access_token"]
        assert (
            http.post(
                "/api/v1/enterprises", json={"id": "ent-1", "name": "济南重工"}, headers=admin
            ).status_code
            == 201
        )
        for site in ("site-1", "site-2"):
            assert (
                http.post(
                    "/api/v1/sites",
                    json={"id": site, "enterprise_id": "ent-1", "name": f"厂区 {site}"},
                    headers=admin,
                ).status_code
                == 201
            )
        crane = http.post(
            "/api/v1/devices",
            json={
                "device_id": "crane-01",
                "kind": "crane",
                "site_id": "site-1",
                "accepted_categories": [{"category": "Q2", "scope": "桥式起重机"}],
            },
            headers=admin,
        )
        assert crane.status_code == 201, crane.text
        forklift = http.post(
            "/api/v1/devices",
            json={
                "device_id": "forklift-01",
                "kind": "forklift",
                "site_id": "site-1",
                "accepted_categories": [{"category": "N1"}],
            },
            headers=admin,
        )
        yield World(
            base=base,
            http=http,
            tokens=tokens,
            crane=DeviceClient(http, "crane-01", crane.json()["device_key"]),
            forklift=DeviceClient(http, "forklift-01", forklift.json()["device_key"]),
            app=app,
        )
