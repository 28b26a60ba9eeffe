"""Login throttling per username and per address, audited; one hash check on every path.

Issue 21, defects 10 (no throttle, lockout or record of failed logins) and 11 (an unknown
username answered without a hash check, so timing told usernames apart). Real HTTP on
loopback, SQLite and PostgreSQL. uvicorn trusts X-Forwarded-For from 127.0.0.1 (its default
`forwarded_allow_ips`), which is how these tests log in from other client addresses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from alembic import command
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import inspect, select, update

from server import audit, security
from server.app import create_app
from server.db import make_engine
from server.domain import Role
from server.migrate import alembic_config, current_revision, upgrade
from server.settings import ServerSettings
from server.tables import AuditEntry, LoginThrottle, User
from tests.server.helpers import live_server

PASSWORD = "correct horse battery"
WRONG = "Tr0ub4dor&3"
MAX_USER = 5
MAX_ADDRESS = 8
LOCKOUT_S = 600
API = "/api/v1/auth/login"


@dataclass
class Server:
    """A live server with the users `alice` and `bob` (and `carol`, disabled)."""

    app: FastAPI
    http: httpx.Client
    verified: list[str]
    """Every hash the password hasher checked a password against, in order."""

    def api_login(self, username: str, password: str, address: str = "") -> httpx.Response:
        headers = {"X-Forwarded-For": address} if address else {}
        return self.http.post(
            API, json={"username": username, "password": password}, headers=headers
        )

    def audit_rows(self, action: str) -> list[AuditEntry]:
        with self.app.state.sessions() as session:
            return list(
                session.scalars(
                    select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
                )
            )


def _settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return ServerSettings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        login_max_failures=MAX_USER,
        login_address_max_failures=MAX_ADDRESS,
        login_window_s=900,
        login_lockout_s=LOCKOUT_S,
    )


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each call of the argon2 verify (the costly step a timing probe measures)."""
    calls: list[str] = []
    real = PasswordHasher.verify

    def spy(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        calls.append(hash if isinstance(hash, str) else hash.decode())
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return calls


@pytest.fixture
def server(tmp_path: Path, db_url: str, verified: list[str]) -> Iterator[Server]:
    app = create_app(_settings(tmp_path, db_url))
    with app.state.sessions() as session:
        security.create_user(session, "alice", PASSWORD, Role.SUPERVISOR)
        security.create_user(session, "bob", PASSWORD, Role.CERT_OFFICE)
        carol = security.create_user(session, "carol", PASSWORD, Role.SUPERVISOR)
        carol.active = False
        session.commit()
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            yield Server(app, http, verified)
    finally:
        app.state.engine.dispose()


def test_sixth_failure_is_refused_even_with_the_right_password(server: Server) -> None:
    for attempt in range(MAX_USER):
        refused = server.api_login("alice", f"{WRONG}{attempt}")
        assert refused.status_code == 401, refused.text
        assert refused.json()["detail"] == "wrong username or password"
    checked = len(server.verified)

    locked = server.api_login("alice", PASSWORD)
    assert locked.status_code == 429, locked.text
    assert locked.json()["detail"] == "too many failed logins, try again later"
    assert 0 < int(locked.headers["Retry-After"]) <= LOCKOUT_S
    assert len(server.verified) == checked, "a locked login must not check the password"
    assert server.api_login("alice", PASSWORD).status_code == 429

    # Another user from the same address is not locked by alice's lock.
    assert server.api_login("bob", PASSWORD).status_code == 200

    failed = server.audit_rows("auth.login_failed")
    assert len(failed) == MAX_USER
    for entry in failed:
        data = json.loads(entry.data)
        assert entry.target == "user:alice"
        assert entry.actor == "address:127.0.0.1"
        assert data["username"] == "alice" and data["address"] == "127.0.0.1"
        assert data["reason"] == "password"
        assert WRONG not in entry.data, "the audit trail must never hold a password"
    assert [json.loads(e.data)["failures"] for e in failed] == list(range(1, MAX_USER + 1))
    (lockout,) = server.audit_rows("auth.lockout")
    assert lockout.target == "user:alice"
    assert json.loads(lockout.data)["failures"] == MAX_USER
    assert all(e.target != "user:alice" for e in server.audit_rows("auth.login"))
    with server.app.state.sessions() as session:
        assert audit.verify(session) == []


def test_a_success_resets_the_users_count(server: Server) -> None:
    # Two addresses, so that the 8 failures stay under the address limit.
    for address in ("198.51.100.1", "198.51.100.2"):
        for _ in range(MAX_USER - 1):
            assert server.api_login("alice", WRONG, address).status_code == 401
        assert server.api_login("alice", PASSWORD, address).status_code == 200
    # Without the reset the 5th failure (of 8) would have locked alice.
    assert not server.audit_rows("auth.lockout")
    with server.app.state.sessions() as session:
        assert session.get(LoginThrottle, ("user", "alice")) is None


def test_the_address_limit_spans_usernames(server: Server) -> None:
    attacker = "203.0.113.7"
    for i in range(MAX_ADDRESS):
        name = "alice" if i == 0 else f"guess{i}"
        assert server.api_login(name, WRONG, attacker).status_code == 401

    # No username has reached its own limit, but the address has: even bob's right password
    # from there is refused, unchecked.
    checked = len(server.verified)
    locked = server.api_login("bob", PASSWORD, attacker)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert len(server.verified) == checked
    # Other addresses are not affected.
    assert server.api_login("bob", PASSWORD, "198.51.100.2").status_code == 200
    assert server.api_login("alice", PASSWORD).status_code == 200

    (lockout,) = server.audit_rows("auth.lockout")
    assert lockout.target == f"address:{attacker}"
    assert json.loads(lockout.data)["failures"] == MAX_ADDRESS
    unknown = [json.loads(e.data) for e in server.audit_rows("auth.login_failed")]
    assert {d["reason"] for d in unknown} == {"password", "unknown_user"}
    assert {d["address"] for d in unknown} == {attacker}


def test_a_valid_login_does_not_reset_the_address_count(server: Server) -> None:
    attacker = "203.0.113.9"
    for i in range(MAX_ADDRESS - 1):
        assert server.api_login(f"guess{i}", WRONG, attacker).status_code == 401
        # The attacker's own account logs in fine in between ...
        assert server.api_login("bob", PASSWORD, attacker).status_code == 200
    # ... but that does not buy more guesses: the 8th failure locks the address.
    assert server.api_login("alice", WRONG, attacker).status_code == 401
    assert server.api_login("bob", PASSWORD, attacker).status_code == 429


def test_the_web_form_is_throttled_with_a_chinese_message(server: Server) -> None:
    for _ in range(MAX_USER):
        page = server.http.post("/login", data={"username": "alice", "password": WRONG})
        assert page.status_code == 401
        assert "用户名或密码错误" in page.text
    locked = server.http.post("/login", data={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) == LOCKOUT_S
    assert f"登录失败次数过多，已暂时锁定，请 {LOCKOUT_S // 60} 分钟后再试" in locked.text
    assert "jifang_session" not in locked.headers.get("set-cookie", "")
    assert not locked.cookies
    # Web form and API share one count: the API is locked for alice too.
    assert server.api_login("alice", PASSWORD).status_code == 429
    assert len(server.audit_rows("auth.login_failed")) == MAX_USER
    assert len(server.audit_rows("auth.lockout")) == 1


def test_the_lock_survives_a_restart_and_ends(server: Server, tmp_path: Path, db_url: str) -> None:
    for _ in range(MAX_USER):
        assert server.api_login("alice", WRONG).status_code == 401

    # A second server process on the same database (another worker, or after a restart).
    other = create_app(_settings(tmp_path, db_url))
    try:
        with live_server(other) as base, httpx.Client(base_url=base, timeout=60) as http:
            body = {"username": "alice", "password": PASSWORD}
            assert http.post(API, json=body).status_code == 429
            with other.state.sessions() as session:
                # The lockout ran its course (moved into the past rather than waited for).
                past = datetime.now(UTC) - timedelta(seconds=1)
                session.execute(
                    update(LoginThrottle)
                    .where(LoginThrottle.key == "alice")
                    .values(locked_until=past)
                )
                # A row from an old window, to be cleaned up by the next login.
                session.add(
                    LoginThrottle(
                        scope="user",
                        key="old-guess",
                        failures=3,
                        window_start=datetime.now(UTC) - timedelta(hours=2),
                        locked_until=None,
                    )
                )
                session.commit()
            assert http.post(API, json=body).status_code == 200
            with other.state.sessions() as session:
                assert session.get(LoginThrottle, ("user", "alice")) is None
                assert session.get(LoginThrottle, ("user", "old-guess")) is None
    finally:
        other.state.engine.dispose()


def test_parallel_guesses_get_no_more_than_the_limit(server: Server) -> None:
    def guess(i: int) -> int:
        return server.api_login("alice", f"{WRONG}{i}").status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(guess, range(12)))
    assert codes.count(401) == MAX_USER, codes
    assert codes.count(429) == 12 - MAX_USER, codes
    assert len(server.verified) == MAX_USER
    assert len(server.audit_rows("auth.lockout")) == 1
    with server.app.state.sessions() as session:
        assert audit.verify(session) == []


def _user_hash(server: Server, username: str) -> str:
    with server.app.state.sessions() as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        return str(user.password_hash)


@pytest.mark.parametrize(
    ("username", "password", "status", "against"),
    [
        ("nobody", PASSWORD, 401, "dummy"),
        ("alice", WRONG, 401, "alice"),
        ("alice", PASSWORD, 200, "alice"),
        ("carol", PASSWORD, 401, "carol"),
    ],
    ids=["unknown", "wrong-password", "right-password", "disabled"],
)
def test_every_login_costs_one_hash_check(
    server: Server, username: str, password: str, status: int, against: str
) -> None:
    response = server.api_login(username, password)
    assert response.status_code == status
    expected = security.DUMMY_HASH if against == "dummy" else _user_hash(server, against)
    assert server.verified == [expected]
    if status == 401:
        assert response.json()["detail"] == "wrong username or password"


def test_the_dummy_hash_costs_what_a_users_hash_costs() -> None:
    hasher = PasswordHasher()
    # Same algorithm and parameters as fresh user hashes: no rehash would be needed.
    assert not hasher.check_needs_rehash(security.DUMMY_HASH)
    assert security.DUMMY_HASH.split("$")[:4] == hasher.hash("x").split("$")[:4]
    assert security.check_password(security.DUMMY_HASH, PASSWORD) is False


def test_the_throttle_migration_goes_down_and_up(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    assert "login_throttle" in inspect(engine).get_table_names()
    command.downgrade(alembic_config(engine), "0005")
    assert current_revision(engine) == "0005"
    assert "login_throttle" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "login_throttle" in inspect(engine).get_table_names()
    engine.dispose()
