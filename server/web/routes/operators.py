"""Operator pages: certificates with status and expiry, templates, and the operator's events."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.deps import SessionDep, SettingsDep
from server.api.routes.operators import operator_public
from server.bundle import evidence_path
from server.domain import Role
from server.settings import ServerSettings
from server.tables import Operator, Site, Template
from server.templates import TemplateError, remove_template
from server.web.deps import StaffPage, Viewer
from server.web.render import render
from server.web.views import operator_events, operator_templates

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/operators", tags=["web"], include_in_schema=False)

OPERATOR_EVENTS_SHOWN = 100
OPERATORS_SHOWN = 200


@router.get("")
def operators_page(
    request: Request,
    viewer: StaffPage,
    session: SessionDep,
    name: str = Query(default="", max_length=64),
) -> HTMLResponse:
    """Operators, optionally those whose name contains a text."""
    query = select(Operator).order_by(Operator.name, Operator.id).limit(OPERATORS_SHOWN)
    if name.strip():
        query = query.where(Operator.name.contains(name.strip(), autoescape=True))
    operators = [operator_public(session, op) for op in session.scalars(query)]
    return render(request, viewer, "operators.html", operators=operators, name=name)


@router.get("/{operator_id}")
def operator_page(
    request: Request,
    operator_id: Annotated[str, Path(max_length=64)],
    viewer: StaffPage,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """One operator: certificates, templates (photos only where allowed), events."""
    return _operator_page(request, operator_id, viewer, session, settings)


@router.post("/{operator_id}/templates/{template_id}/remove")
def remove_template_form(
    request: Request,
    operator_id: Annotated[str, Path(max_length=64)],
    template_id: Annotated[str, Path(max_length=64)],
    viewer: StaffPage,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Remove one template (never the certificate photo); audited, devices get the change."""
    try:
        remove_template(session, operator_id, template_id, viewer.principal.actor)
    except TemplateError as err:
        session.rollback()
        return _operator_page(
            request, operator_id, viewer, session, settings, error=err.code, status_code=409
        )
    session.commit()
    return RedirectResponse(f"/operators/{operator_id}?removed=1", 303)


def _operator_page(
    request: Request,
    operator_id: str,
    viewer: Viewer,
    session: Session,
    settings: ServerSettings,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    op = session.get(Operator, operator_id)
    if op is None:
        return render(
            request,
            viewer,
            "error.html",
            status_code=404,
            title_key="error.not_found.title",
            body_key="operator.not_found",
        )
    public = operator_public(session, op)
    # Events are review material: only reviewers see them here.
    reviewer = viewer.role in (Role.SUPERVISOR, Role.ADMIN)
    templates = operator_templates(session, operator_id)
    photos = {
        t.id: evidence_path(settings.evidence_dir, t.source_sha256).exists() for t in templates
    }
    return render(
        request,
        viewer,
        "operator.html",
        status_code=status_code,
        op=public,
        removed=request.query_params.get("removed") == "1",
        error=error,
        max_templates=settings.enroll_max_templates,
        sites={s.id: s.name for s in session.scalars(select(Site))},
        templates=templates,
        photos=photos,
        thumbnails=settings.web_show_template_thumbnails,
        events=operator_events(session, operator_id, OPERATOR_EVENTS_SHOWN) if reviewer else None,
        # Days to expiry count in the site's calendar, not UTC's.
        today=datetime.now(ZoneInfo(settings.web_timezone)).date(),
        expiring_days=settings.web_cert_expiring_days,
    )


@router.get("/{operator_id}/templates/{template_id}/photo")
def template_photo(
    operator_id: Annotated[str, Path(max_length=64)],
    template_id: Annotated[str, Path(max_length=64)],
    viewer: StaffPage,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The photo a template was enrolled from, only where the privacy setting allows it."""
    if not settings.web_show_template_thumbnails:
        return Response(status_code=404)
    template = session.get(Template, template_id)
    if template is None or template.operator_id != operator_id:
        return Response(status_code=404)
    path = evidence_path(settings.evidence_dir, template.source_sha256)
    if not path.exists():
        return Response(status_code=404)
    with path.open("rb") as file:
        png = file.read(8) == b"\x89PNG\r\n\x1a\n"
    return FileResponse(
        path,
        media_type="image/png" if png else "image/jpeg",
        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
    )
