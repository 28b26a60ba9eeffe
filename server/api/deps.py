"""Annotated dependency aliases: database session, settings, and callers with their roles.

Every route declares the roles that may call it through one of the `require(...)` aliases;
`create_app` refuses to start if a route (other than the public ones) declares none.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from contract.auth import (
    HEADER_DEVICE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SignatureError,
    parse_timestamp,
    verify_request_mac,
)
from server.domain import Role
from server.security import user_for_token
from server.settings import ServerSettings
from server.tables import Device, User

logger = logging.getLogger(__name__)


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; routes commit what they write."""
    with request.app.state.sessions() as session:
        yield session


def get_settings(request: Request) -> ServerSettings:
    """The settings the app was built with."""
    settings: ServerSettings = request.app.state.settings
    return settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[ServerSettings, Depends(get_settings)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a logged-in user or a signed device."""

    role: Role
    user: User | None = None
    device: Device | None = None

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        if self.device is not None:
            return f"device:{self.device.id}"
        assert self.user is not None  # a principal is a user or a device
        return f"user:{self.user.username}"

    @property
    def user_id(self) -> int:
        """The calling user's id (routes for users only)."""
        assert self.user is not None  # only user routes ask
        return self.user.id


async def _device_principal(
    request: Request, session: Session, settings: ServerSettings
) -> Principal:
    device_id = request.headers.get(HEADER_DEVICE, "")
    timestamp = request.headers.get(HEADER_TIMESTAMP, "")
    signature = request.headers.get(HEADER_SIGNATURE, "")
    if not timestamp or not signature:
        raise HTTPException(401, "device signature missing")
    try:
        sent_at = parse_timestamp(timestamp)
    except SignatureError as err:
        raise HTTPException(401, "device timestamp invalid") from err
    if abs(time.time() - sent_at) > settings.clock_skew_s:
        raise HTTPException(401, "device timestamp out of range")
    # The body size is capped while it streams in (server/api/limits.py), so reading it below
    # never holds more than device_max_request_bytes, declared length or not.
    device = session.get(Device, device_id)
    if device is None or not device.active:
        raise HTTPException(401, "unknown device")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    body = await request.body()
    # docs/protocol.md: the HMAC key is the issued key text (64 hex characters) as ASCII
    # bytes, exactly as the agent's YAML secret holds it. One form only.
    try:
        verify_request_mac(
            device.key.hex().encode("ascii"), request.method, path, timestamp, body, signature
        )
    except SignatureError as err:
        raise HTTPException(401, "device signature invalid") from err
    return Principal(Role.DEVICE, device=device)


def require(*roles: Role) -> Any:
    """A dependency that admits only callers holding one of `roles` (deny by default)."""
    allowed = frozenset(roles)

    async def guard(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
        return await _principal(request, session, settings, allowed)

    guard.jifang_roles = allowed  # type: ignore[attr-defined]
    return Depends(guard)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _principal(
    request: Request, session: Session, settings: ServerSettings, allowed: frozenset[Role]
) -> Principal:
    if HEADER_DEVICE in request.headers:
        if Role.DEVICE not in allowed:
            raise HTTPException(403, "role not allowed")
        return await _device_principal(request, session, settings)
    token = _bearer(request)
    if not token:
        raise HTTPException(401, "not authenticated", headers={"WWW-Authenticate": "Bearer"})
    user = user_for_token(session, token)
    if user is None:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    role = Role(user.role)
    if role not in allowed:
        raise HTTPException(403, "role not allowed")
    return Principal(role, user=user)


def require_metrics_reader() -> Any:
    """Admins, or a scraper sending the configured `metrics_token` as a bearer token."""
    allowed = frozenset({Role.ADMIN})

    async def metrics_guard(request: Request, session: SessionDep, settings: SettingsDep) -> None:
        token = _bearer(request)
        expected = settings.metrics_token
        if (
            expected is not None
            and token
            and HEADER_DEVICE not in request.headers
            and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
        ):
            return
        await _principal(request, session, settings, allowed)

    metrics_guard.jifang_roles = allowed  # type: ignore[attr-defined]
    return Depends(metrics_guard)


def body_limit(setting: str) -> Any:
    """Declares a route's body cap as the settings field `setting` (an upload route)."""
    field = ServerSettings.model_fields.get(setting)
    if field is None or field.annotation is not int:
        raise ValueError(f"body_limit needs an int settings field, not {setting!r}")

    def body_cap() -> None:
        return None

    body_cap.jifang_body_limit = setting  # type: ignore[attr-defined]
    return Depends(body_cap)


def declared_body_limit(call: Callable[..., Any]) -> str | None:
    """The settings field a `body_limit` dependency names, if it is one."""
    setting = getattr(call, "jifang_body_limit", None)
    return str(setting) if setting is not None else None


def secure_cookies(request: Request, settings: ServerSettings) -> bool:
    """Whether cookies set on this answer carry `Secure` (settings.session_cookie_secure)."""
    if settings.session_cookie_secure is not None:
        return settings.session_cookie_secure
    # uvicorn rewrites the scheme from X-Forwarded-Proto for trusted_proxies only.
    return request.url.scheme == "https"


def declared_roles(call: Callable[..., Any]) -> frozenset[Role] | None:
    """The roles a dependency declares, if it is a role guard."""
    roles = getattr(call, "jifang_roles", None)
    return frozenset(roles) if roles is not None else None


AdminDep = Annotated[Principal, require(Role.ADMIN)]
METRICS_READER = require_metrics_reader()
DeviceDep = Annotated[Principal, require(Role.DEVICE)]
CertOfficeDep = Annotated[Principal, require(Role.CERT_OFFICE, Role.ADMIN)]
ReviewerDep = Annotated[Principal, require(Role.SUPERVISOR, Role.ADMIN)]
StaffDep = Annotated[Principal, require(Role.SUPERVISOR, Role.CERT_OFFICE, Role.ADMIN)]


def own_device(principal: Principal, device_id: str) -> Device:
    """The calling device, refusing any other device's id."""
    assert principal.device is not None  # DeviceDep routes only
    if principal.device.id != device_id:
        raise HTTPException(403, "device may only use its own id")
    return principal.device


def public() -> Any:
    """Marks a route as open to anyone (health, metrics, login): an explicit declaration."""

    def open_route() -> None:
        return None

    open_route.jifang_roles = frozenset()  # type: ignore[attr-defined]
    return Depends(open_route)


PUBLIC = public()
