"""Who is looking at a page: the session cookie (or a bearer token), its role, CSRF and language.

Pages declare their roles like the API routes (`page_require(...)`), so `create_app` checks
them too. A missing or expired session redirects to the login page; a wrong role, or any
request signed by a device key, gets a 403 page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from contract.auth import HEADER_DEVICE
from server.api.deps import Principal, SessionDep, SettingsDep
from server.domain import Role
from server.security import user_for_token
from server.web.i18n import LANGUAGES, Translator, translator

logger = logging.getLogger(__name__)

SESSION_COOKIE = "jifang_session"
LANG_COOKIE = "jifang_lang"
CSRF_FIELD = "csrf"


class LoginRequired(Exception):
    """No live session: the page answers with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageForbidden(Exception):
    """The caller's role may not see the page (or a device key tried to)."""


class BadForm(Exception):
    """A form failed its CSRF check or carried a value the page cannot use."""


def language(request: Request) -> str:
    """The page language: the visitor's choice, else the server's default."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return str(request.app.state.settings.language)


def csrf_token(session_token: str) -> str:
    """The form token bound to one login session (a cross-site page cannot compute it)."""
    return hashlib.sha256(f"jifang-csrf:{session_token}".encode()).hexdigest()


def safe_next(value: str | None, default: str = "/") -> str:
    """A local path to go to after a form; anything else (other hosts) becomes `default`."""
    # Browsers drop tabs and newlines inside URLs ("/\t/evil" becomes "//evil"), so any
    # control or space character disqualifies the value, as do "//" and backslashes.
    if (
        value
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and all(ord(c) > 0x20 and c != "\x7f" for c in value)
    ):
        return value
    return default


@dataclass(frozen=True)
class Viewer:
    """The logged-in user looking at a page."""

    principal: Principal
    csrf: str
    lang: str
    t: Translator

    @property
    def role(self) -> Role:
        """The user's role."""
        return self.principal.role

    @property
    def user_id(self) -> int:
        """The user's id."""
        return self.principal.user_id


def _session_token(request: Request) -> tuple[str, bool]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), False
    return request.cookies.get(SESSION_COOKIE, ""), True


def page_require(*roles: Role) -> Any:
    """A dependency that admits only logged-in users holding one of `roles` (deny by default)."""
    allowed = frozenset(roles)

    async def page_guard(request: Request, session: SessionDep, settings: SettingsDep) -> Viewer:
        if HEADER_DEVICE in request.headers:
            raise PageForbidden("device keys do not open pages")
        token, from_cookie = _session_token(request)
        user = user_for_token(session, token) if token else None
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target if request.method == "GET" else "/")
        role = Role(user.role)
        if role not in allowed:
            raise PageForbidden(f"role {role} may not open {request.url.path}")
        csrf = csrf_token(token)
        # A browser sends the cookie by itself, so a cookie-authenticated form must prove it
        # came from our own page; a bearer token is never sent by a browser on its own.
        if request.method == "POST" and from_cookie:
            form = await request.form()
            sent = form.get(CSRF_FIELD)
            if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf):
                raise BadForm("form token missing or wrong")
        lang = language(request)
        return Viewer(Principal(role, user=user), csrf, lang, translator(lang))

    page_guard.jifang_roles = allowed  # type: ignore[attr-defined]
    return Depends(page_guard)


ReviewPage = Annotated[Viewer, page_require(Role.SUPERVISOR, Role.ADMIN)]
StaffPage = Annotated[Viewer, page_require(Role.SUPERVISOR, Role.CERT_OFFICE, Role.ADMIN)]
