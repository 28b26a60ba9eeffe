"""Jinja2 rendering with the page language, local times and role-dependent navigation."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from server.domain import Role
from server.web.deps import Viewer, language
from server.web.i18n import translator

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_NAV: tuple[tuple[str, str, frozenset[Role]], ...] = (
    ("/review", "nav.queue", frozenset({Role.SUPERVISOR, Role.ADMIN})),
    ("/dashboard", "nav.dashboard", frozenset({Role.SUPERVISOR, Role.ADMIN})),
    ("/operators", "nav.operators", frozenset({Role.SUPERVISOR, Role.CERT_OFFICE, Role.ADMIN})),
)


def home_for(role: Role) -> str:
    """Where a user of `role` lands after logging in."""
    for path, _, roles in _NAV:
        if role in roles:
            return path
    return "/login"


def nav_for(role: Role) -> list[tuple[str, str]]:
    """The navigation links (path, text key) a role may follow."""
    return [(path, key) for path, key, roles in _NAV if role in roles]


def local_time(value: datetime | str | None, zone: ZoneInfo, seconds: bool = True) -> str:
    """A UTC timestamp (or its ISO text, as audit entries keep it) as the site's wall clock."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def render(
    request: Request, viewer: Viewer | None, template: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page template for the viewer (or an anonymous visitor)."""
    lang = viewer.lang if viewer is not None else language(request)
    zone = ZoneInfo(request.app.state.settings.web_timezone)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    html = _env.get_template(template).render(
        request=request,
        viewer=viewer,
        t=translator(lang),
        lang=lang,
        here=here,
        nav=nav_for(viewer.role) if viewer is not None else [],
        local=lambda value, seconds=True: local_time(value, zone, seconds),
        svg=Markup,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    # Pages show personal data: keep them out of shared caches and other sites' frames.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'"
    )
    return response
