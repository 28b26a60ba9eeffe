"""What the pages show, gathered from the database (the templates only lay it out)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from contract.codes import EventKind, ReasonCode
from contract.messages import EvidenceRef
from server import incidents, review
from server.bundle import evidence_path
from server.domain import ReviewStatus
from server.settings import ServerSettings
from server.tables import (
    AuditEntry,
    Certificate,
    Cylinder,
    CylinderType,
    Decision,
    Device,
    Event,
    Evidence,
    Operator,
    Site,
    Template,
    User,
)
from server.web.charts import ImageSizeError, image_size, stacked_bars

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZoneOverlay:
    """A station zone to draw over a frame, as SVG polygon points."""

    zone_id: str
    points: str
    operator_points: str | None


@dataclass(frozen=True)
class DetectionOverlay:
    """A detector box to draw over a station frame."""

    label: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class EvidenceView:
    """One evidence image and what to draw over it (face box, or station zones and boxes)."""

    sha256: str
    role: str
    box: tuple[float, float, float, float] | None
    width: int
    height: int
    stored: bool
    camera_id: str | None = None
    captured_at: datetime | None = None
    zones: tuple[ZoneOverlay, ...] = ()
    detections: tuple[DetectionOverlay, ...] = ()

    @property
    def overlay(self) -> bool:
        """Whether there is anything to draw, and the image size to draw it on."""
        drawn = self.box is not None or bool(self.zones) or bool(self.detections)
        return drawn and self.width > 0 and self.height > 0


def _points(polygon: tuple[tuple[float, float], ...]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in polygon)


@dataclass(frozen=True)
class MatchView:
    """A gallery match: score against threshold, and who it names."""

    score: float
    threshold: float
    margin: float | None
    passed: bool
    score_kind: str
    """"cosine" (-1..1) or "as_norm" (normalised against the pack's cohort)."""
    operator_id: str
    operator: Operator | None
    certificate_no: str | None
    certificate: Certificate | None


@dataclass
class EventDetail:
    """Everything the event page shows."""

    event: Event
    device: Device | None
    site: Site | None
    evidence: list[EvidenceView]
    match: MatchView | None
    expected: Operator | None
    expected_id: str | None
    liveness: float | None
    liveness_failed: bool
    claim: dict[str, Any] | None
    cylinder_code: str | None
    cylinder: Cylinder | None
    cylinder_type: CylinderType | None
    timeline: list[Event]
    decisions: list[Decision]
    users: dict[int, str]
    audit: list[AuditEntry]
    reviewed: bool
    latest_outcome: str | None
    payload_json: str
    claimed_by: str | None
    fill: Event | None
    """Station violations: the fill it happened in (cylinder, masses, times)."""
    fill_folded: bool
    """The fill is reviewed on this item (it repeats this violation's reason)."""
    covers: list[str]
    """Event ids folded into this item (its timeline shows them as part of it, unlinked)."""


def evidence_views(session: Session, settings: ServerSettings, event: Event) -> list[EvidenceView]:
    """The event's evidence images with their pixel size (0 when not uploaded or unreadable)."""
    views = []
    for raw in event.body.get("evidence", []):
        # Stored bodies passed the contract at ingest; read them back through it.
        ref = EvidenceRef.model_validate(raw)
        path = evidence_path(settings.evidence_dir, ref.sha256)
        width = height = 0
        stored = session.get(Evidence, ref.sha256) is not None and path.exists()
        if stored:
            try:
                width, height = image_size(path.read_bytes())
            except ImageSizeError as err:
                logger.warning("evidence %s: %s", ref.sha256, err)
        views.append(
            EvidenceView(
                sha256=ref.sha256,
                role=ref.role,
                box=ref.box,
                width=width,
                height=height,
                stored=stored,
                camera_id=ref.camera_id,
                captured_at=ref.captured_at,
                zones=tuple(
                    ZoneOverlay(
                        zone_id=z.zone_id,
                        points=_points(z.polygon),
                        operator_points=_points(z.operator_polygon) if z.operator_polygon else None,
                    )
                    for z in ref.zones
                ),
                detections=tuple(DetectionOverlay(d.label, d.box) for d in ref.detections),
            )
        )
    return views


def _incident_evidence(
    session: Session, settings: ServerSettings, event: Event
) -> list[EvidenceView]:
    """The item's evidence, then that of the fills folded into it (each image once)."""
    views = evidence_views(session, settings, event)
    for fill in incidents.covered_fills(session, event):
        shown = {v.sha256 for v in views}
        views += [v for v in evidence_views(session, settings, fill) if v.sha256 not in shown]
    return views


def _match(session: Session, info: dict[str, Any] | None) -> MatchView | None:
    if not info:
        return None
    number = info.get("certificate_no")
    score = float(info["score"])
    threshold = float(info["threshold"])
    return MatchView(
        score=score,
        threshold=threshold,
        margin=float(info["margin"]) if info.get("margin") is not None else None,
        passed=score >= threshold,
        score_kind=str(info.get("score_kind", "cosine")),
        operator_id=str(info["operator_id"]),
        operator=session.get(Operator, str(info["operator_id"])),
        certificate_no=number,
        certificate=session.get(Certificate, number) if number else None,
    )


def event_detail(
    session: Session, settings: ServerSettings, event: Event, user_id: int
) -> EventDetail:
    """Gather the event page: evidence, match, device, cylinder, timeline, decisions, audit."""
    payload: dict[str, Any] = event.body.get("payload", {})
    # A re-verification reports whom it saw under "observed"; a station's "observed" is a number.
    match_info = payload.get("match") or (
        payload.get("observed") if event.kind == EventKind.CAB_REVERIFY else None
    )
    expected_id = payload.get("expected_operator_id")
    cylinder_code = (
        payload.get("cylinder_code") or payload.get("scanned_code") or payload.get("camera_code")
    )
    cylinder = None
    cylinder_type = None
    if cylinder_code and event.kind.startswith("station."):
        cylinder = session.scalar(select(Cylinder).where(Cylinder.code == cylinder_code))
        if cylinder is not None:
            cylinder_type = session.get(CylinderType, cylinder.type_code)
    window = timedelta(seconds=settings.web_timeline_window_s)
    timeline = list(
        session.scalars(
            select(Event)
            .where(
                Event.device_id == event.device_id,
                Event.occurred_at >= event.occurred_at - window,
                Event.occurred_at <= event.occurred_at + window,
            )
            .order_by(Event.occurred_at, Event.seq)
        )
    )
    decisions = review.decisions(session, event)
    fill = incidents.fills_of(session, [event]).get(event.event_id)
    user_ids = {d.user_id for d in decisions}
    if event.claimed_by is not None:
        user_ids.add(event.claimed_by)
    users = {
        u.id: u.display_name or u.username
        for u in session.scalars(select(User).where(User.id.in_(user_ids)))
    }
    device = session.get(Device, event.device_id)
    return EventDetail(
        event=event,
        device=device,
        site=session.get(Site, event.site_id),
        evidence=_incident_evidence(session, settings, event),
        match=_match(session, match_info),
        expected=session.get(Operator, expected_id) if expected_id else None,
        expected_id=expected_id,
        liveness=payload.get("liveness_score"),
        liveness_failed=event.reason == ReasonCode.LIVENESS_FAILED,
        claim=payload.get("claim"),
        cylinder_code=cylinder_code,
        cylinder=cylinder,
        cylinder_type=cylinder_type,
        timeline=timeline,
        decisions=decisions,
        users=users,
        audit=review.audit_entries(session, event),
        reviewed=bool(review.reviewed_by(session, user_id, [event.event_id])),
        latest_outcome=review.latest_outcome(session, event),
        payload_json=json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True),
        claimed_by=users.get(event.claimed_by) if event.claimed_by is not None else None,
        fill=fill,
        fill_folded=fill is not None and fill.reason == event.reason,
        covers=incidents.incident_ids(session, event)[1:],
    )


def operator_events(session: Session, operator_id: str, limit: int) -> list[Event]:
    """Events that name the operator: matched, expected, observed or filling, newest first."""
    body = Event.body
    names = or_(
        body[("payload", "match", "operator_id")].as_string() == operator_id,
        body[("payload", "observed", "operator_id")].as_string() == operator_id,
        body[("payload", "expected_operator_id")].as_string() == operator_id,
        body[("payload", "filler_operator_id")].as_string() == operator_id,
    )
    return list(
        session.scalars(select(Event).where(names).order_by(Event.occurred_at.desc()).limit(limit))
    )


def operator_templates(session: Session, operator_id: str) -> list[Template]:
    """The operator's face templates, newest first."""
    return list(
        session.scalars(
            select(Template)
            .where(Template.operator_id == operator_id)
            .order_by(Template.created_at.desc())
        )
    )


@dataclass(frozen=True)
class Dashboard:
    """The dashboard: violation charts, backlog and offline devices."""

    by_site_svg: str
    by_kind_svg: str
    total: int
    backlog: dict[str, dict[str, int]]
    backlog_total: int
    oldest_waiting: datetime | None
    offline: list[tuple[Device, Site | None]]


def _daily(
    rows: list[tuple[datetime, str, str]], days: list[date], zone: ZoneInfo, pick: int
) -> dict[str, list[int]]:
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for row in rows:
        at = row[0] if row[0].tzinfo is not None else row[0].replace(tzinfo=UTC)
        day = at.astimezone(zone).date()
        if day in index:
            series[str(row[pick])][index[day]] += 1
    return dict(sorted(series.items(), key=lambda item: -sum(item[1])))


def dashboard(
    session: Session,
    settings: ServerSettings,
    now: datetime,
    site_name: dict[str, str],
    kind_name: dict[str, str],
    titles: tuple[str, str],
) -> Dashboard:
    """Incidents (review items) per site and kind per local day, the review backlog, devices
    gone quiet; a fill folded into its violation's item is not counted again."""
    zone = ZoneInfo(settings.web_timezone)
    today = now.astimezone(zone).date()
    days = [today - timedelta(days=n) for n in range(settings.web_dashboard_days - 1, -1, -1)]
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=zone).astimezone(UTC)
    rows = [
        (at, site, kind)
        for at, site, kind in session.execute(
            select(Event.occurred_at, Event.site_id, Event.kind).where(
                incidents.is_item(), Event.occurred_at >= start
            )
        )
    ]
    by_site = {site_name.get(k, k): v for k, v in _daily(rows, days, zone, 1).items()}
    by_kind = {kind_name.get(k, k): v for k, v in _daily(rows, days, zone, 2).items()}
    waiting = [ReviewStatus.OPEN.value, ReviewStatus.CLAIMED.value]
    backlog: dict[str, dict[str, int]] = defaultdict(dict)
    for severity, status, count in session.execute(
        select(Event.severity, Event.review_status, func.count())
        .where(incidents.is_item(), Event.review_status.in_(waiting))
        .group_by(Event.severity, Event.review_status)
    ):
        backlog[str(severity)][str(status)] = int(count)
    oldest = session.scalar(
        select(func.min(Event.occurred_at)).where(
            incidents.is_item(), Event.review_status.in_(waiting)
        )
    )
    cutoff = now - timedelta(seconds=settings.device_offline_after_s)
    offline = []
    for device in session.scalars(
        select(Device).where(Device.active.is_(True)).order_by(Device.site_id, Device.id)
    ):
        seen = review.aware(device.last_seen_at)
        if seen is None or seen < cutoff:
            offline.append((device, session.get(Site, device.site_id)))
    return Dashboard(
        by_site_svg=stacked_bars(days, by_site, titles[0]),
        by_kind_svg=stacked_bars(days, by_kind, titles[1]),
        total=len(rows),
        backlog=dict(backlog),
        backlog_total=sum(sum(v.values()) for v in backlog.values()),
        oldest_waiting=review.aware(oldest),
        offline=offline,
    )
