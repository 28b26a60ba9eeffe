"""Log in and out of the pages, pick the language, and land on the role's home page."""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.api.deps import PUBLIC, SessionDep, SettingsDep, secure_cookies
from server.api.routes.auth import client_address
from server.domain import Role
from server.security import LoginRefused, LoginThrottled, log_in, log_out
from server.web.deps import LANG_COOKIE, SESSION_COOKIE, StaffPage, safe_next
from server.web.i18n import LANGUAGES
from server.web.render import home_for, render

logger = logging.getLogger(__name__)
router = APIRouter(tags=["web"], include_in_schema=False)

LANG_COOKIE_MAX_AGE_S = 365 * 86_400


@router.get("/")
def home(viewer: StaffPage) -> Response:
    """Send a logged-in user to the first page their role may use."""
    return RedirectResponse(home_for(viewer.role), status_code=303)


@router.get("/login", dependencies=[PUBLIC])
def login_form(request: Request, next: str = Query(default="", max_length=2000)) -> HTMLResponse:
    """The login form."""
    return render(
        request, None, "login.html", next=safe_next(next, ""), failed=False, locked_minutes=0
    )


@router.post("/login", dependencies=[PUBLIC])
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check the password, set the session cookie and go to the page asked for (or home)."""
    try:
        user, token, _ = log_in(session, username, password, client_address(request), settings)
    except LoginThrottled as locked:
        page = render(
            request,
            None,
            "login.html",
            status_code=429,
            next=safe_next(next, ""),
            failed=False,
            locked_minutes=math.ceil(locked.retry_after_s / 60),
        )
        page.headers["Retry-After"] = str(locked.retry_after_s)
        return page
    except LoginRefused:
        return render(
            request,
            None,
            "login.html",
            status_code=401,
            next=safe_next(next, ""),
            failed=True,
            locked_minutes=0,
        )
    response = RedirectResponse(safe_next(next, home_for(Role(user.role))), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request, settings),
    )
    return response


@router.post("/logout")
def logout(request: Request, viewer: StaffPage, session: SessionDep) -> Response:
    """End the session and return to the login form."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if token:
        log_out(session, token, viewer.principal.actor)
        session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/lang/{lang}", dependencies=[PUBLIC])
def choose_language(
    lang: Annotated[str, Path(max_length=8)],
    next: str = Query(default="/", max_length=2000),
) -> Response:
    """Remember the visitor's language and go back where they were."""
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE_S, httponly=True, samesite="lax"
        )
    return response
