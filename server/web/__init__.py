"""Supervisor web pages (zh-CN first, English too), served by the API app itself.

`ROUTERS` go through `create_app`'s role check like the API routers; `install` adds the
static assets (all local: sites are often offline) and the page error handlers.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from server.web.deps import BadForm, LoginRequired, PageForbidden
from server.web.render import STATIC, render
from server.web.routes import dashboard, docs, operators, review, session

logger = logging.getLogger(__name__)

ROUTERS = (session.router, review.router, operators.router, dashboard.router, docs.router)


def install(app: FastAPI) -> None:
    """Mount the static assets and turn page errors into redirects and error pages."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)  # registered for this type only
        return RedirectResponse("/login?" + urlencode({"next": exc.next_url}), status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        logger.info("page refused: %s", exc)
        return render(
            request,
            None,
            "error.html",
            status_code=403,
            title_key="error.forbidden.title",
            body_key="error.forbidden.body",
        )

    async def bad_form(request: Request, exc: Exception) -> Response:
        logger.info("form refused: %s", exc)
        return render(
            request,
            None,
            "error.html",
            status_code=400,
            title_key="error.bad_form.title",
            body_key="error.bad_form.body",
        )

    async def missing(request: Request, exc: Exception) -> Response:
        return render(
            request,
            None,
            "error.html",
            status_code=404,
            title_key="error.not_found.title",
            body_key="error.not_found.body",
        )

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(PageForbidden, forbidden)
    app.add_exception_handler(BadForm, bad_form)

    async def covered(request: Request, exc: Exception) -> Response:
        # A folded fill is reviewed on its violation's item: open that page instead (a form
        # posted to the fill's address changes nothing).
        assert isinstance(exc, review.EventCovered)  # registered for this type only
        query = f"?{request.url.query}" if request.method == "GET" and request.url.query else ""
        return RedirectResponse(f"/review/{exc.item_id}{query}", status_code=303)

    app.add_exception_handler(review.EventMissing, missing)
    app.add_exception_handler(review.EventCovered, covered)
