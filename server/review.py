"""The review workflow shared by the API and the web pages: queue queries, claims, decisions."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from contract.codes import Severity
from server import audit, incidents
from server.domain import Outcome, ReviewStatus
from server.schemas import EventPublic, LinkedFill
from server.tables import AuditEntry, Decision, Event, ReviewMark

logger = logging.getLogger(__name__)

_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


class EventNotFound(LookupError):
    """No flagged event has this id."""


class Covered(LookupError):
    """The event is a fill folded into a violation's review item; act on that item."""

    def __init__(self, event_id: str, item_id: str) -> None:
        super().__init__(f"event {event_id} is covered by review item {item_id}")
        self.event_id = event_id
        self.item_id = item_id


class ClaimConflict(Exception):
    """Someone else holds a fresh claim on the event."""


def aware(value: datetime | None) -> datetime | None:
    """`value` with UTC attached when the database returned it naive (SQLite)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class QueueFilter:
    """What the review queue is narrowed to; empty fields do not filter."""

    site: str | None = None
    device: str | None = None
    kind: str | None = None
    severity: Severity | None = None
    status: ReviewStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    unreviewed_by: int | None = None
    """A user id: leave out the events this user marked reviewed."""


def _filtered(query: _Query, spec: QueueFilter) -> _Query:
    # One incident, one item: a fill folded into its violation's item is not queued apart.
    query = query.where(incidents.is_item())
    if spec.site:
        query = query.where(Event.site_id == spec.site)
    if spec.device:
        query = query.where(Event.device_id == spec.device)
    if spec.kind:
        query = query.where(Event.kind == spec.kind)
    if spec.severity:
        query = query.where(Event.severity == spec.severity.value)
    if spec.status:
        query = query.where(Event.review_status == spec.status.value)
    if spec.since:
        query = query.where(Event.occurred_at >= spec.since)
    if spec.until:
        query = query.where(Event.occurred_at < spec.until)
    if spec.unreviewed_by is not None:
        marked = select(ReviewMark.event_id).where(ReviewMark.user_id == spec.unreviewed_by)
        query = query.where(Event.event_id.not_in(marked))
    return query


def queue(session: Session, spec: QueueFilter, limit: int, offset: int = 0) -> list[Event]:
    """Review items matching `spec`, newest first."""
    query = _filtered(select(Event), spec)
    query = query.order_by(Event.occurred_at.desc(), Event.event_id).limit(limit).offset(offset)
    return list(session.scalars(query))


def queue_counts(session: Session, spec: QueueFilter) -> dict[str, int]:
    """How many review items match `spec`, per review status, and in all ("total")."""
    rows = session.execute(
        _filtered(select(Event.review_status, func.count()), spec).group_by(Event.review_status)
    ).all()
    counts = {str(status): int(n) for status, n in rows}
    counts["total"] = sum(counts.values())
    return counts


def neighbour(session: Session, spec: QueueFilter, event: Event, newer: bool) -> Event | None:
    """The event next to `event` in queue order: the older one after it, or the newer before."""
    at = event.occurred_at
    if newer:
        position = or_(
            Event.occurred_at > at, and_(Event.occurred_at == at, Event.event_id < event.event_id)
        )
        order = (Event.occurred_at.asc(), Event.event_id.desc())
    else:
        position = or_(
            Event.occurred_at < at, and_(Event.occurred_at == at, Event.event_id > event.event_id)
        )
        order = (Event.occurred_at.desc(), Event.event_id.asc())
    query = _filtered(select(Event), spec).where(position).order_by(*order).limit(1)
    return session.scalars(query).first()


def _latest(session: Session, event_ids: list[str]) -> Decision | None:
    return session.scalars(
        select(Decision).where(Decision.event_id.in_(event_ids)).order_by(Decision.id.desc())
    ).first()


def latest_outcome(session: Session, item: Event) -> str | None:
    """The outcome of the newest decision on a review item (its folded fill's included)."""
    latest = _latest(session, incidents.incident_ids(session, item))
    return latest.outcome if latest is not None else None


def reviewed_by(session: Session, user_id: int, event_ids: list[str]) -> set[str]:
    """Which of `event_ids` the user has marked reviewed."""
    if not event_ids:
        return set()
    return set(
        session.scalars(
            select(ReviewMark.event_id).where(
                ReviewMark.user_id == user_id, ReviewMark.event_id.in_(event_ids)
            )
        )
    )


def event_public(session: Session, event: Event, user_id: int, body: bool) -> EventPublic:
    """An event with its latest outcome and the user's reviewed mark."""
    mine = session.get(ReviewMark, (user_id, event.event_id)) is not None
    out = EventPublic.model_validate(event)
    fill = incidents.fills_of(session, [event]).get(event.event_id)
    return out.model_copy(
        update={
            "latest_outcome": latest_outcome(session, event),
            "reviewed_by_me": mine,
            "body": event.body if body else None,
            "covers": incidents.incident_ids(session, event)[1:],
            "fill": LinkedFill.model_validate(fill) if fill is not None else None,
        }
    )


def flagged(session: Session, event_id: str) -> Event:
    """The review item with this id; a fill folded into another item raises Covered."""
    event = session.get(Event, event_id)
    if event is None or not event.flagged:
        raise EventNotFound(event_id)
    item_id = incidents.item_of(session, event)
    if item_id is not None:
        raise Covered(event_id, item_id)
    return event


def _covering(fill_ids: list[str]) -> dict[str, list[str]]:
    """Audit data naming the folded fills a review action also covers (none: nothing added)."""
    return {"covers": fill_ids} if fill_ids else {}


def claim(session: Session, event: Event, user_id: int, actor: str, ttl_s: int) -> None:
    """Take an event (the caller commits); refused while someone else's claim is fresh."""
    now = datetime.now(UTC)
    claimed_at = aware(event.claimed_at)
    if (
        event.claimed_by not in (None, user_id)
        and claimed_at is not None
        and now - claimed_at < timedelta(seconds=ttl_s)
        and event.review_status == ReviewStatus.CLAIMED
    ):
        raise ClaimConflict(event.event_id)
    event.claimed_by = user_id
    event.claimed_at = now
    if event.review_status != ReviewStatus.DECIDED:
        event.review_status = ReviewStatus.CLAIMED
    covers = incidents.incident_ids(session, event)[1:]
    audit.append(session, actor, "review.claim", f"event:{event.event_id}", _covering(covers))


def decide(
    session: Session, event: Event, user_id: int, actor: str, outcome: Outcome, comment: str
) -> Decision:
    """Append a decision (the caller commits); it supersedes the previous one, kept as it was.

    The decision covers the whole incident: the item's event and any fill folded into it.
    """
    ids = incidents.incident_ids(session, event)
    latest = _latest(session, ids)
    previous = latest.id if latest is not None else None
    now = datetime.now(UTC)
    decision = Decision(
        event_id=event.event_id,
        user_id=user_id,
        outcome=outcome.value,
        comment=comment,
        supersedes=previous,
        decided_at=now,
    )
    session.add(decision)
    event.review_status = ReviewStatus.DECIDED
    session.merge(ReviewMark(user_id=user_id, event_id=event.event_id, reviewed_at=now))
    session.flush()
    audit.append(
        session,
        actor,
        "review.decision",
        f"event:{event.event_id}",
        {
            "decision_id": decision.id,
            "outcome": outcome.value,
            "comment": comment,
            "supersedes": previous,
            **_covering(ids[1:]),
        },
    )
    return decision


def decisions(session: Session, item: Event) -> list[Decision]:
    """Every decision on a review item (its folded fill's included), oldest first."""
    ids = incidents.incident_ids(session, item)
    return list(
        session.scalars(select(Decision).where(Decision.event_id.in_(ids)).order_by(Decision.id))
    )


def mark_reviewed(session: Session, event_id: str, user_id: int) -> None:
    """Record that the user looked at the event (the caller commits)."""
    session.merge(ReviewMark(user_id=user_id, event_id=event_id, reviewed_at=datetime.now(UTC)))


def unmark_reviewed(session: Session, event_id: str, user_id: int) -> None:
    """Clear the user's reviewed mark (the caller commits)."""
    mark = session.get(ReviewMark, (user_id, event_id))
    if mark is not None:
        session.delete(mark)


def audit_entries(session: Session, event: Event) -> list[AuditEntry]:
    """The audit entries about an item: ingest batches, links, reviews and evidence uploads of
    its event and of any fill folded into it."""
    events = [event, *incidents.covered_fills(session, event)]
    batches = [e.batch_audit_seq for e in events if e.batch_audit_seq is not None]
    targets = [f"event:{e.event_id}" for e in events]
    targets += [f"evidence:{ref['sha256']}" for e in events for ref in e.body.get("evidence", [])]
    return list(
        session.scalars(
            select(AuditEntry)
            .where(or_(AuditEntry.seq.in_(batches), AuditEntry.target.in_(targets)))
            .order_by(AuditEntry.seq)
        )
    )
