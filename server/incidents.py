"""Incidents: a station fill that broke a rule and its violation events make one review item.

The agent sends each violation as it fires and the fill when it ends; since schema 1.3 the fill
lists its violations' ids. The fill folds into the review item of the violation that carries
the fill's own reason (the fill repeats that violation); another violation of the same fill
(a second rule broken) stays an item of its own and shows the fill beside it.

Links work in either arrival order: a fill's list is stored as links at once and a link counts
when its violation is stored for the same device. Fills of agents before 1.3 carry no ids; the
server matches them (`matches`): same device and scale, a cylinder code in common when both
name one, a violation the rules record during a fill, inside the fill's start..end widened by
`fill_link_tolerance_s`. A fill that no stored violation of its reason covers stays in the
queue itself, so a missing or late violation never hides a fill.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session, aliased

from contract.codes import EventKind, ReasonCode
from contract.messages import FILL_VIOLATION_IDS_SINCE, schema_minor
from server import audit
from server.domain import FILL_VIOLATIONS, LinkSource, ReviewStatus
from server.settings import ServerSettings
from server.tables import Event, FillLink, ReviewMark

logger = logging.getLogger(__name__)

_STATUS_RANK = {
    ReviewStatus.NONE.value: 0,
    ReviewStatus.OPEN.value: 1,
    ReviewStatus.CLAIMED.value: 2,
    ReviewStatus.DECIDED.value: 3,
}


@dataclass(frozen=True)
class LinkWindow:
    """How far the server looks when it matches fills of older agents to violations."""

    tolerance: timedelta
    max_fill: timedelta

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> LinkWindow:
        """The window the settings describe."""
        return cls(
            timedelta(seconds=settings.fill_link_tolerance_s),
            timedelta(seconds=settings.fill_link_max_fill_s),
        )


def reports_violation_ids(body: dict[str, Any]) -> bool:
    """Whether a fill event's schema version has `violation_ids` (else the server matches)."""
    version = str(body.get("schema_version", "1.0"))
    return schema_minor(version) >= schema_minor(FILL_VIOLATION_IDS_SINCE)


def _codes(payload: dict[str, Any]) -> set[str]:
    names = ("cylinder_code", "scanned_code", "camera_code")
    return {str(payload[n]) for n in names if payload.get(n)}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def matches(fill: dict[str, Any], violation: dict[str, Any], tolerance: timedelta) -> bool:
    """Whether a violation (event body) happened during a fill (event body) of an old agent."""
    if violation.get("reason") not in FILL_VIOLATIONS:
        return False
    if fill.get("device_id") != violation.get("device_id"):
        return False
    fp, vp = fill["payload"], violation["payload"]
    if fp.get("scale_id") != vp.get("scale_id"):
        return False
    fill_codes, violation_codes = _codes(fp), _codes(vp)
    if fill_codes and violation_codes and not fill_codes & violation_codes:
        return False
    start = _at(fp["started_at"]) - tolerance
    end = _at(fp.get("ended_at") or fill["occurred_at"]) + tolerance
    return start <= _at(violation["occurred_at"]) <= end


def _links_to(violation: Any) -> ColumnElement[bool]:
    """SQL join condition: the fill link points at this (aliased) violation row."""
    return and_(
        FillLink.violation_id == violation.event_id, FillLink.device_id == violation.device_id
    )


def folded() -> ColumnElement[bool]:
    """SQL: the events row is a fill whose incident is reviewed on its violation's item."""
    violation = aliased(Event)
    return (
        select(FillLink.fill_id)
        .join(violation, _links_to(violation))
        .where(FillLink.fill_id == Event.event_id, violation.reason == Event.reason)
        .exists()
    )


def is_item() -> ColumnElement[bool]:
    """SQL: the events row is a review item (flagged, and not folded into another item)."""
    return and_(Event.flagged.is_(True), ~folded())


def covered_fills(session: Session, item: Event) -> list[Event]:
    """The fills folded into a violation's review item."""
    if item.kind != EventKind.STATION_VIOLATION:
        return []
    return list(
        session.scalars(
            select(Event)
            .join(FillLink, FillLink.fill_id == Event.event_id)
            .where(
                FillLink.violation_id == item.event_id,
                FillLink.device_id == item.device_id,
                Event.device_id == item.device_id,
                Event.reason == item.reason,
            )
            .order_by(Event.occurred_at, Event.event_id)
        )
    )


def incident_ids(session: Session, item: Event) -> list[str]:
    """The review item's event id first, then the fills folded into it."""
    return [item.event_id, *(f.event_id for f in covered_fills(session, item))]


def item_of(session: Session, fill: Event) -> str | None:
    """The violation whose review item covers this fill, or None when the fill is its own."""
    if fill.kind != EventKind.STATION_FILL:
        return None
    violation = aliased(Event)
    return session.scalar(
        select(violation.event_id)
        .join(FillLink, _links_to(violation))
        .where(
            FillLink.fill_id == fill.event_id,
            violation.device_id == fill.device_id,
            violation.reason == fill.reason,
        )
        .order_by(violation.occurred_at, violation.event_id)
        .limit(1)
    )


def fills_of(session: Session, violations: list[Event]) -> dict[str, Event]:
    """The fill each violation happened in, by violation id (violations without one left out)."""
    devices = {v.event_id: v.device_id for v in violations if v.kind == EventKind.STATION_VIOLATION}
    if not devices:
        return {}
    rows = session.execute(
        select(FillLink.violation_id, FillLink.device_id, Event)
        .join(Event, Event.event_id == FillLink.fill_id)
        .where(FillLink.violation_id.in_(list(devices)))
    ).all()
    return {vid: fill for vid, device, fill in rows if devices[vid] == device}


def _linked(session: Session, device_id: str, violation_id: str) -> bool:
    return session.get(FillLink, (device_id, violation_id)) is not None


def _violations_during(session: Session, fill: Event, window: LinkWindow) -> list[Event]:
    payload = fill.body["payload"]
    start = _at(payload["started_at"]) - window.tolerance
    end = _at(payload.get("ended_at") or fill.body["occurred_at"]) + window.tolerance
    candidates = session.scalars(
        select(Event)
        .where(
            Event.device_id == fill.device_id,
            Event.kind == EventKind.STATION_VIOLATION.value,
            Event.occurred_at >= start,
            Event.occurred_at <= end,
        )
        .order_by(Event.occurred_at, Event.seq)
    )
    return [v for v in candidates if matches(fill.body, v.body, window.tolerance)]


def _fill_around(session: Session, violation: Event, window: LinkWindow) -> Event | None:
    at = _at(violation.body["occurred_at"])
    candidates = session.scalars(
        select(Event)
        .where(
            Event.device_id == violation.device_id,
            Event.kind == EventKind.STATION_FILL.value,
            Event.reason != ReasonCode.FILL_OK.value,
            Event.occurred_at >= at - window.tolerance,
            Event.occurred_at <= at + window.max_fill + window.tolerance,
        )
        .order_by(Event.occurred_at, Event.seq)
    )
    for fill in candidates:
        if not reports_violation_ids(fill.body) and matches(
            fill.body, violation.body, window.tolerance
        ):
            return fill
    return None


def _carry_review(session: Session, fill: Event, violation: Event) -> dict[str, Any]:
    """Move what reviewers already did on the fill onto the item that now covers it."""
    carried: dict[str, Any] = {}
    if _STATUS_RANK.get(fill.review_status, 0) > _STATUS_RANK.get(violation.review_status, 0):
        carried["review_status"] = fill.review_status
        violation.review_status = fill.review_status
    if violation.claimed_by is None and fill.claimed_by is not None:
        carried["claimed_by"] = fill.claimed_by
        violation.claimed_by = fill.claimed_by
        violation.claimed_at = fill.claimed_at
    marks = []
    for mark in session.scalars(select(ReviewMark).where(ReviewMark.event_id == fill.event_id)):
        if session.get(ReviewMark, (mark.user_id, violation.event_id)) is None:
            session.add(
                ReviewMark(
                    user_id=mark.user_id, event_id=violation.event_id, reviewed_at=mark.reviewed_at
                )
            )
            marks.append(mark.user_id)
    if marks:
        carried["reviewed_by"] = marks
    return carried


def link_new_events(
    session: Session, device_id: str, event_ids: list[str], window: LinkWindow, now: datetime
) -> int:
    """Link the batch's new station events to their fills or violations; how many links count.

    Runs in the ingest transaction after the rows are inserted. Every link that counts from now
    on is audited on the violation (`incident.link`), with what moved from the fill's review.
    """
    rows = list(
        session.scalars(
            select(Event).where(
                Event.event_id.in_(event_ids),
                Event.kind.in_([EventKind.STATION_FILL.value, EventKind.STATION_VIOLATION.value]),
            )
        )
    )
    made: list[FillLink] = []

    def add(violation_id: str, fill: Event, source: LinkSource) -> None:
        if _linked(session, device_id, violation_id):
            return
        link = FillLink(
            device_id=device_id,
            violation_id=violation_id,
            fill_id=fill.event_id,
            matched_by=source.value,
            created_at=now,
        )
        session.add(link)
        session.flush()
        made.append(link)

    for fill in (r for r in rows if r.kind == EventKind.STATION_FILL and r.flagged):
        if reports_violation_ids(fill.body):
            for violation_id in fill.body["payload"].get("violation_ids", []):
                add(str(violation_id), fill, LinkSource.DEVICE)
        else:
            for violation in _violations_during(session, fill, window):
                add(violation.event_id, fill, LinkSource.WINDOW)
    fresh_violations = [r for r in rows if r.kind == EventKind.STATION_VIOLATION]
    for violation in fresh_violations:
        if not _linked(session, device_id, violation.event_id):
            around = _fill_around(session, violation, window)
            if around is not None:
                add(violation.event_id, around, LinkSource.WINDOW)
    candidates = {link.violation_id for link in made} | {v.event_id for v in fresh_violations}
    if not candidates:
        return 0
    violation_row = aliased(Event)
    fill_row = aliased(Event)
    completed = session.execute(
        select(FillLink, violation_row, fill_row)
        .join(
            violation_row,
            and_(
                violation_row.event_id == FillLink.violation_id,
                violation_row.device_id == FillLink.device_id,
            ),
        )
        .join(fill_row, fill_row.event_id == FillLink.fill_id)
        .where(FillLink.device_id == device_id, FillLink.violation_id.in_(list(candidates)))
        .order_by(violation_row.occurred_at, violation_row.seq)
    ).all()
    for link, violation, fill in completed:
        folds = violation.reason == fill.reason
        carried = _carry_review(session, fill, violation) if folds else {}
        audit.append(
            session,
            f"device:{device_id}",
            "incident.link",
            f"event:{violation.event_id}",
            {
                "fill": fill.event_id,
                "matched_by": link.matched_by,
                "folded": folds,
                "carried": carried,
            },
        )
    if completed:
        logger.info("device %s: %d violation(s) linked to their fills", device_id, len(completed))
    return len(completed)
