"""The dashboard: violations per site and kind over time, review backlog, offline devices."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from contract.codes import EventKind, Severity
from server.api.deps import SessionDep, SettingsDep
from server.domain import ReviewStatus
from server.tables import Site
from server.web.deps import ReviewPage
from server.web.render import render
from server.web.views import dashboard

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/dashboard", tags=["web"], include_in_schema=False)


@router.get("")
def dashboard_page(
    request: Request, viewer: ReviewPage, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """Charts, backlog and offline devices."""
    t = viewer.t
    days = settings.web_dashboard_days
    board = dashboard(
        session,
        settings,
        datetime.now(UTC),
        {s.id: s.name for s in session.scalars(select(Site))},
        {k.value: t(f"kind.{k.value}") for k in EventKind},
        (t("dashboard.by_site", days=days), t("dashboard.by_kind", days=days)),
    )
    return render(
        request,
        viewer,
        "dashboard.html",
        board=board,
        days=days,
        severities=[s for s in reversed(list(Severity))],
        statuses=(ReviewStatus.OPEN, ReviewStatus.CLAIMED),
    )
