"""Request-layer limits over real HTTP: body caps while the body streams in, signed timestamps,
sequence bounds, 422 bodies that echo nothing, and who may read /metrics and /docs.

Issue 21, defects 1, 2, 6 and 7 and the request-layer weaknesses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_mac
from server.app import create_app
from server.settings import ServerSettings
from server.tables import Device, Event, User
from server.threaded import free_port
from tests.server.conftest import PASSWORD, World, _bootstrap_admin
from tests.server.helpers import DeviceClient, batch_of, denied_event, live_server

MiB = 1024 * 1024
RSS_LIMIT_MB = 300
"""Issue 21 acceptance: peak server RSS while a huge body is refused."""


def _chunks(total: int, sent: list[int], chunk: int = 64 * 1024) -> Iterator[bytes]:
    """`total` bytes generated lazily (httpx sends a generator chunked, no Content-Length)."""
    block = b"a" * chunk
    while sent[0] < total:
        sent[0] += chunk
        yield block


def _signed(device: DeviceClient, method: str, path: str, body: bytes, timestamp: str) -> dict:
    return {
        HEADER_DEVICE: device.device_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: request_mac(device.key, method, path, timestamp, body),
        "Content-Type": "application/json",
    }


def _stored_events(world: World) -> int:
    with world.app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


# --- body caps --------------------------------------------------------------------------------


def test_chunked_user_body_past_the_cap_is_cut_off_and_nothing_is_written(world: World) -> None:
    cap = world.app.state.settings.user_max_request_bytes
    sent = [0]
    response = world.http.post(
        "/api/v1/users",
        content=_chunks(50 * MiB, sent),
        headers={**world.as_role("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == f"request too large: the limit is {cap} bytes"
    assert response.headers["connection"] == "close"
    assert sent[0] < 50 * MiB
    with world.app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 3


def test_login_body_past_the_cap_is_refused_chunked_or_declared(world: World) -> None:
    sent = [0]
    chunked = world.http.post(
        "/api/v1/auth/login",
        content=_chunks(20 * MiB, sent),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    assert chunked.json()["detail"].startswith("request too large")
    # A declared length past the cap is refused before a byte of the body is sent.
    answer = _head_only(world.base, "/api/v1/auth/login", 10**12)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # A login that fits still works.
    ok = world.http.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert ok.status_code == 200


def _head_only(base: str, path: str, declared: int) -> bytes:
    """Send only the request head declaring `declared` body bytes; return the answer."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        return sock.recv(65536)


def test_device_body_past_its_cap_is_refused_before_the_signature(world: World) -> None:
    cap = world.app.state.settings.device_max_request_bytes
    body = b"x" * (cap + 1)
    headers = _signed(world.crane, "POST", "/api/v1/events", body, str(int(time.time())))
    response = world.http.post("/api/v1/events", content=iter([body]), headers=headers)
    assert response.status_code == 413
    assert response.json()["detail"] == f"request too large: the limit is {cap} bytes"
    assert _stored_events(world) == 0


def test_upload_routes_keep_their_own_larger_caps(world: World) -> None:
    # 2 MiB is past the user cap (1 MiB) but inside the enrolment photo cap (evidence bytes).
    photo = b"\xff\xd8\xff" + bytes(2 * MiB)
    response = world.http.post(
        "/api/v1/operators/op-none/templates",
        content=iter([photo]),
        headers={**world.as_role("cert_office"), "Content-Type": "image/jpeg"},
    )
    assert response.status_code == 404 and response.json()["detail"] == "operator not found"


# --- signed timestamps (defect 6) -------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp", ["nan", "NaN", "inf", "-inf", "1e9", "1_700_000_000", "now.", "+now", "-5", "0x10"]
)
def test_device_timestamp_must_be_plain_unix_seconds(world: World, timestamp: str) -> None:
    body = batch_of("crane-01", [denied_event("crane-01", 0)]).model_dump_json().encode()
    # "now." and "+now" are in the window and float() takes them, but they are not plain decimal.
    timestamp = timestamp.replace("now", str(int(time.time())))
    headers = _signed(world.crane, "POST", "/api/v1/events", body, timestamp)
    response = world.http.post("/api/v1/events", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "device timestamp invalid"
    assert _stored_events(world) == 0


def test_fractional_timestamp_in_the_window_is_accepted(world: World) -> None:
    body = batch_of("crane-01", [denied_event("crane-01", 0)]).model_dump_json().encode()
    headers = _signed(world.crane, "POST", "/api/v1/events", body, f"{time.time():.3f}")
    response = world.http.post("/api/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert _stored_events(world) == 1


# --- sequence numbers (defect 7) --------------------------------------------------------------


@pytest.mark.parametrize("seq", [2**63 + 5, 2**62, 2**53])
def test_oversize_seq_is_refused_with_422_and_gap_detection_stays_sane(
    world: World, seq: int
) -> None:
    first = world.crane.post_batch(batch_of("crane-01", [denied_event("crane-01", 0)]))
    assert first.status_code == 200
    event = denied_event("crane-01", 1).model_dump(mode="json")
    event["seq"] = seq
    body = json.dumps(
        {
            "device_id": "crane-01",
            "sent_at": datetime.now(UTC).isoformat(),
            "events": [event],
        }
    ).encode()
    refused = world.crane.request(
        "POST", "/api/v1/events", body, {"Content-Type": "application/json"}
    )
    assert refused.status_code == 422, refused.text
    assert "less than or equal" in refused.json()["detail"]
    assert _stored_events(world) == 1
    with world.app.state.sessions() as session:
        device = session.get(Device, "crane-01")
        assert device is not None and device.last_seq == 0
    # The next event still reports the real gap.
    after = world.crane.post_batch(batch_of("crane-01", [denied_event("crane-01", 3)]))
    assert after.status_code == 200
    assert after.json()["gaps"] == [{"first_missing": 1, "last_missing": 2}]


def test_oversize_heartbeat_counter_is_422_not_500(world: World) -> None:
    body = json.dumps(
        {
            "device_id": "crane-01",
            "sent_at": datetime.now(UTC).isoformat(),
            "agent_version": "1.0",
            "state": "locked",
            "gallery_version": 2**63 + 5,
        }
    ).encode()
    response = world.crane.request(
        "POST", "/api/v1/devices/crane-01/heartbeat", body, {"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "gallery_version"]


# --- 422 bodies -------------------------------------------------------------------------------


def test_validation_errors_name_the_field_but_never_echo_the_input(world: World) -> None:
    secret = "hunter2-but-much-longer-" * 12  # past max_length 256
    api = world.http.post("/api/v1/auth/login", json={"username": "admin", "password": secret})
    assert api.status_code == 422
    assert "hunter2" not in api.text
    (error,) = api.json()["detail"]
    assert error["loc"] == ["body", "password"] and error["type"] == "string_too_long"
    assert set(error) == {"loc", "msg", "type"}
    page = world.http.post("/login", data={"username": "admin", "password": secret})
    assert page.status_code == 422 and "hunter2" not in page.text
    batch = batch_of("crane-01", [denied_event("crane-01", 0)]).model_dump(mode="json")
    batch["events"][0]["payload"]["detail"] = "secret-detail-" * 100
    response = world.crane.request(
        "POST", "/api/v1/events", json.dumps(batch).encode(), {"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "secret-detail" not in response.text


# --- /metrics and /docs -----------------------------------------------------------------------


def test_metrics_and_docs_are_for_admins_only(world: World) -> None:
    assert world.http.get("/metrics").status_code == 401
    assert world.call("supervisor", "GET", "/metrics").status_code == 403
    assert world.crane.request("GET", "/metrics").status_code == 403
    assert "jifang_events_ingested" in world.call("admin", "GET", "/metrics").text
    for path in ("/docs", "/redoc", "/openapi.json"):
        anonymous = world.http.get(path)
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        assert world.call("supervisor", "GET", path).status_code == 403
        assert world.call("admin", "GET", path).status_code == 200
    schema = world.call("admin", "GET", "/openapi.json").json()
    assert "/api/v1/events" in schema["paths"]


@pytest.fixture
def tuned(settings: ServerSettings, engine) -> Iterator[tuple[str, FastAPI]]:  # noqa: ANN001
    """A live server with a metrics token and Secure session cookies forced on."""
    tuned_settings = settings.model_copy(
        update={"metrics_token": "scraper-token-0123456789", "session_cookie_secure": True}
    )
    app = create_app(ServerSettings(**tuned_settings.model_dump()), face_engine=engine)
    _bootstrap_admin(app)
    try:
        with live_server(app) as base:
            yield base, app
    finally:
        app.state.engine.dispose()


def test_metrics_token_admits_a_scraper_and_nothing_else(tuned: tuple[str, FastAPI]) -> None:
    base, _ = tuned
    scraper = httpx.get(
        f"{base}/metrics", headers={"Authorization": "Bearer scraper-token-0123456789"}
    )
    assert scraper.status_code == 200 and "jifang_events_ingested" in scraper.text
    wrong = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer scraper-token-x"})
    assert wrong.status_code == 401
    # The metrics token is no user token.
    me = httpx.get(
        f"{base}/api/v1/auth/me", headers={"Authorization": "Bearer scraper-token-0123456789"}
    )
    assert me.status_code == 401


def _login_cookie(base: str, headers: dict[str, str] | None = None) -> str:
    response = httpx.post(
        f"{base}/login", data={"username": "admin", "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 303, response.text
    return response.headers["set-cookie"]


def test_session_cookie_is_secure_when_configured(tuned: tuple[str, FastAPI]) -> None:
    base, _ = tuned
    assert "secure" in _login_cookie(base).lower().split("; ")


def test_session_cookie_follows_the_scheme_a_trusted_proxy_reports(world: World) -> None:
    assert "secure" not in _login_cookie(world.base).lower().split("; ")
    # uvicorn believes X-Forwarded-Proto from loopback (the default trusted proxy).
    forwarded = _login_cookie(world.base, {"X-Forwarded-Proto": "https"})
    assert "secure" in forwarded.lower().split("; ")


# --- memory probe (defects 1 and 2) -----------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import uvicorn

    from server.app import create_app
    from server.domain import Role
    from server.security import create_user
    from server.settings import ServerSettings

    data, model_dir, port, password = sys.argv[1:5]
    settings = ServerSettings(data_dir=Path(data), model_dir=Path(model_dir))
    app = create_app(settings)
    with app.state.sessions() as session:
        create_user(session, "admin", password, Role.ADMIN)
        session.commit()
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning", access_log=False)
    """
)


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_huge_chunked_bodies_keep_server_rss_bounded(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(tmp_path / "data"), str(model_dir), str(port), PASSWORD]
    )
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            _wait_for(http, server)
            token = http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
            ).json()["access_token"]
            admin = {"Authorization": f"Bearer {token}"}
            http.post("/api/v1/enterprises", json={"id": "e", "name": "e"}, headers=admin)
            http.post(
                "/api/v1/sites", json={"id": "s", "enterprise_id": "e", "name": "s"}, headers=admin
            )
            made = http.post(
                "/api/v1/devices",
                json={"device_id": "d", "kind": "crane", "site_id": "s"},
                headers=admin,
            )
            assert made.status_code == 201, made.text
            device = DeviceClient(http, "d", made.json()["device_key"])
            baseline = _peak_rss_mb(server.pid)
            # Defect 1: 400 MB chunked, signed with a wrong key.
            sent = [0]
            headers = _signed(device, "POST", "/api/v1/events", b"", str(int(time.time())))
            forged = http.post("/api/v1/events", content=_chunks(400 * MiB, sent), headers=headers)
            assert forged.status_code == 413, forged.text
            assert sent[0] < 100 * MiB
            # Defect 2: 200 MB chunked to the login, no auth at all.
            sent = [0]
            login = http.post(
                "/api/v1/auth/login",
                content=_chunks(200 * MiB, sent),
                headers={"Content-Type": "application/json"},
            )
            assert login.status_code == 413, login.text
            assert sent[0] < 100 * MiB
            assert http.get("/healthz").status_code == 200
        peak = _peak_rss_mb(server.pid)
        print(f"server peak RSS: {baseline:.0f} MB before, {peak:.0f} MB after")  # noqa: T201
        assert peak < RSS_LIMIT_MB
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for(http: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server process exited"
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not start")
