"""Review pages: the queue with filters and counts, the event page, decisions, evidence."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from contract.codes import EventKind, Severity
from server import incidents, review
from server.api.deps import SessionDep, SettingsDep
from server.bundle import evidence_path
from server.domain import Outcome, ReviewStatus
from server.tables import Device, Event, Evidence, Site
from server.web.charts import score_bar
from server.web.deps import BadForm, ReviewPage, Viewer
from server.web.render import render
from server.web.views import event_detail

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/review", tags=["web"], include_in_schema=False)

FILTER_FIELDS = ("site", "device", "kind", "severity", "status", "since", "until", "mine")
QUEUE_STATUSES = (ReviewStatus.OPEN, ReviewStatus.CLAIMED, ReviewStatus.DECIDED)


class EventMissing(Exception):
    """The page names an event that is not in the review queue."""


class EventCovered(Exception):
    """The page names a fill folded into a violation's review item."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id


@dataclass(frozen=True)
class QueueQuery:
    """The queue filter as the page's form sent it, checked."""

    spec: review.QueueFilter
    values: dict[str, str]
    """The accepted form values, to refill the form and carry between pages."""
    errors: list[str]

    @property
    def query_string(self) -> str:
        """The filter as a URL query (empty values left out)."""
        return urlencode({k: v for k, v in self.values.items() if v})


def _day(value: str, zone: ZoneInfo) -> datetime:
    return datetime.combine(date.fromisoformat(value), time.min, tzinfo=zone).astimezone(UTC)


def parse_filter(params: dict[str, str], viewer: Viewer, zone: ZoneInfo) -> QueueQuery:
    """Read the queue filter from query parameters; bad values are dropped and named."""
    values = {name: params.get(name, "").strip()[:64] for name in FILTER_FIELDS}
    errors: list[str] = []
    severity = status = None
    since = until = None
    if values["kind"] and values["kind"] not in {k.value for k in EventKind}:
        errors.append("kind")
    if values["severity"]:
        try:
            severity = Severity(values["severity"])
        except ValueError:
            errors.append("severity")
    if values["status"]:
        try:
            status = ReviewStatus(values["status"])
        except ValueError:
            errors.append("status")
    try:
        since = _day(values["since"], zone) if values["since"] else None
    except ValueError:
        errors.append("since")
    try:
        # The "to" date is inclusive: events up to the end of that local day.
        until = _day(values["until"], zone) + timedelta(days=1) if values["until"] else None
    except ValueError:
        errors.append("until")
    for name in errors:
        values[name] = ""
    spec = review.QueueFilter(
        site=values["site"] or None,
        device=values["device"] or None,
        kind=values["kind"] or None,
        severity=severity,
        status=status,
        since=since,
        until=until,
        unreviewed_by=viewer.user_id if values["mine"] == "1" else None,
    )
    return QueueQuery(spec, values, errors)


def _zone(request: Request) -> ZoneInfo:
    return ZoneInfo(request.app.state.settings.web_timezone)


def _flagged(session: Session, event_id: str) -> Event:
    try:
        return review.flagged(session, event_id)
    except review.EventNotFound:
        raise EventMissing(event_id) from None
    except review.Covered as err:
        raise EventCovered(err.item_id) from None


@router.get("")
def queue_page(
    request: Request, viewer: ReviewPage, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """The review queue: flagged events newest first, filtered, counted, paged."""
    query = parse_filter(dict(request.query_params), viewer, _zone(request))
    counts = review.queue_counts(session, query.spec)
    pages = max(1, math.ceil(counts["total"] / settings.web_page_size))
    try:
        page = min(max(int(request.query_params.get("page", "1")), 1), pages)
    except ValueError:
        page = 1
    events = review.queue(
        session, query.spec, settings.web_page_size, (page - 1) * settings.web_page_size
    )
    ids = [e.event_id for e in events]
    sites = list(session.scalars(select(Site).order_by(Site.id)))
    return render(
        request,
        viewer,
        "queue.html",
        query=query,
        counts=counts,
        events=events,
        mine=review.reviewed_by(session, viewer.user_id, ids),
        outcomes={e.event_id: review.latest_outcome(session, e) for e in events},
        fills=incidents.fills_of(session, events),
        page=page,
        pages=pages,
        sites=sites,
        site_names={s.id: s.name for s in sites},
        devices=list(session.scalars(select(Device).order_by(Device.id))),
        kinds=list(EventKind),
        severities=list(Severity),
        statuses=QUEUE_STATUSES,
    )


@router.get("/evidence/{sha256}")
def evidence_image(
    viewer: ReviewPage,
    session: SessionDep,
    settings: SettingsDep,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
) -> Response:
    """One stored evidence image."""
    row = session.get(Evidence, sha256)
    path = evidence_path(settings.evidence_dir, sha256)
    if row is None or not path.exists():
        return Response(status_code=404)
    return FileResponse(
        path,
        media_type=row.media_type,
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/{event_id}")
def event_page(
    request: Request,
    event_id: Annotated[str, Path(max_length=36)],
    viewer: ReviewPage,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """One flagged event with everything a reviewer needs to decide."""
    event = _flagged(session, event_id)
    query = parse_filter(dict(request.query_params), viewer, _zone(request))
    newer = review.neighbour(session, query.spec, event, newer=True)
    older = review.neighbour(session, query.spec, event, newer=False)
    detail = event_detail(session, settings, event, viewer.user_id)
    return render(
        request,
        viewer,
        "event.html",
        d=detail,
        query=query,
        prev_id=newer.event_id if newer else None,
        next_id=older.event_id if older else None,
        outcomes=list(Outcome),
        score_bar=score_bar,
        saved=request.query_params.get("saved") == "1",
        conflict=request.query_params.get("conflict") == "1",
        window_min=settings.web_timeline_window_s // 60,
    )


def _event_url(event_id: str, query_string: str, extra: str = "") -> str:
    parts = [p for p in (query_string, extra) if p]
    return f"/review/{event_id}" + (f"?{'&'.join(parts)}" if parts else "")


def _carried(q: str, viewer: Viewer, zone: ZoneInfo) -> QueueQuery:
    return parse_filter(dict(parse_qsl(q)), viewer, zone)


@router.post("/{event_id}/decision")
def record_decision(
    request: Request,
    event_id: Annotated[str, Path(max_length=36)],
    viewer: ReviewPage,
    session: SessionDep,
    outcome: Annotated[str, Form(max_length=32)] = "",
    comment: Annotated[str, Form(max_length=4000)] = "",
    q: Annotated[str, Form(max_length=2000)] = "",
    go: Annotated[str, Form(max_length=8)] = "stay",
) -> Response:
    """Append the reviewer's decision, then stay on the event or open the next one."""
    event = _flagged(session, event_id)
    try:
        chosen = Outcome(outcome)
    except ValueError:
        raise BadForm(f"outcome {outcome!r} is not one of {[o.value for o in Outcome]}") from None
    review.decide(session, event, viewer.user_id, viewer.principal.actor, chosen, comment)
    session.commit()
    query = _carried(q, viewer, _zone(request))
    if go == "next":
        following = review.neighbour(session, query.spec, event, newer=False)
        if following is not None:
            return RedirectResponse(_event_url(following.event_id, query.query_string), 303)
        return RedirectResponse(
            "/review" + (f"?{query.query_string}" if query.query_string else ""), 303
        )
    return RedirectResponse(_event_url(event_id, query.query_string, "saved=1"), 303)


@router.post("/{event_id}/reviewed")
def set_reviewed(
    request: Request,
    event_id: Annotated[str, Path(max_length=36)],
    viewer: ReviewPage,
    session: SessionDep,
    reviewed: Annotated[str, Form(max_length=1)] = "1",
    q: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Set or clear the reviewer's own reviewed mark."""
    _flagged(session, event_id)
    if reviewed == "1":
        review.mark_reviewed(session, event_id, viewer.user_id)
    else:
        review.unmark_reviewed(session, event_id, viewer.user_id)
    session.commit()
    query = _carried(q, viewer, _zone(request))
    return RedirectResponse(_event_url(event_id, query.query_string), 303)


@router.post("/{event_id}/claim")
def claim_event(
    request: Request,
    event_id: Annotated[str, Path(max_length=36)],
    viewer: ReviewPage,
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Take the event so other reviewers see it is being worked on."""
    event = _flagged(session, event_id)
    query = _carried(q, viewer, _zone(request))
    try:
        review.claim(session, event, viewer.user_id, viewer.principal.actor, settings.claim_ttl_s)
    except review.ClaimConflict:
        session.rollback()
        return RedirectResponse(_event_url(event_id, query.query_string, "conflict=1"), 303)
    session.commit()
    return RedirectResponse(_event_url(event_id, query.query_string), 303)
