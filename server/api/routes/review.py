"""The review queue: filter flagged events, claim, decide (append-only), mark reviewed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import select

from contract.codes import Severity
from server import audit
from server.api.deps import Principal, ReviewerDep, SessionDep, SettingsDep
from server.domain import ReviewStatus
from server.schemas import DecisionCreate, DecisionPublic, EventPublic
from server.tables import Decision, Event, ReviewMark

router = APIRouter(prefix="/api/v1/review", tags=["review"])


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _public(session: SessionDep, event: Event, principal: Principal, body: bool) -> EventPublic:
    latest = session.scalar(
        select(Decision.outcome)
        .where(Decision.event_id == event.event_id)
        .order_by(Decision.id.desc())
        .limit(1)
    )
    mine = session.get(ReviewMark, (principal.user_id, event.event_id)) is not None
    out = EventPublic.model_validate(event)
    return out.model_copy(
        update={
            "latest_outcome": latest,
            "reviewed_by_me": mine,
            "body": event.body if body else None,
        }
    )


@router.get("/events")
def list_flagged(
    principal: ReviewerDep,
    session: SessionDep,
    site: str | None = Query(default=None, max_length=64),
    device: str | None = Query(default=None, max_length=64),
    kind: str | None = Query(default=None, max_length=32),
    severity: Severity | None = None,
    status: ReviewStatus | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    unreviewed_by_me: bool = False,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> list[EventPublic]:
    """Flagged events, newest first, filtered."""
    query = select(Event).where(Event.flagged.is_(True))
    if site:
        query = query.where(Event.site_id == site)
    if device:
        query = query.where(Event.device_id == device)
    if kind:
        query = query.where(Event.kind == kind)
    if severity:
        query = query.where(Event.severity == severity.value)
    if status:
        query = query.where(Event.review_status == status.value)
    if since:
        query = query.where(Event.occurred_at >= since)
    if until:
        query = query.where(Event.occurred_at < until)
    if unreviewed_by_me:
        marked = select(ReviewMark.event_id).where(ReviewMark.user_id == principal.user_id)
        query = query.where(Event.event_id.not_in(marked))
    query = query.order_by(Event.occurred_at.desc(), Event.event_id).limit(limit).offset(offset)
    return [_public(session, e, principal, body=False) for e in session.scalars(query)]


def _flagged(session: SessionDep, event_id: str) -> Event:
    event = session.get(Event, event_id)
    if event is None or not event.flagged:
        raise HTTPException(404, "flagged event not found")
    return event


@router.get("/events/{event_id}")
def get_flagged(event_id: str, principal: ReviewerDep, session: SessionDep) -> EventPublic:
    """One flagged event with its body."""
    return _public(session, _flagged(session, event_id), principal, body=True)


@router.post("/events/{event_id}/claim")
def claim(
    event_id: str, principal: ReviewerDep, session: SessionDep, settings: SettingsDep
) -> EventPublic:
    """Take an event; refused while someone else's claim is fresh."""
    event = _flagged(session, event_id)
    now = datetime.now(UTC)
    claimed_at = _aware(event.claimed_at)
    if (
        event.claimed_by not in (None, principal.user_id)
        and claimed_at is not None
        and now - claimed_at < timedelta(seconds=settings.claim_ttl_s)
        and event.review_status == ReviewStatus.CLAIMED
    ):
        raise HTTPException(409, "claimed by another reviewer")
    event.claimed_by = principal.user_id
    event.claimed_at = now
    if event.review_status != ReviewStatus.DECIDED:
        event.review_status = ReviewStatus.CLAIMED
    audit.append(session, principal.actor, "review.claim", f"event:{event_id}", {})
    session.commit()
    return _public(session, event, principal, body=False)


@router.post("/events/{event_id}/decisions", status_code=201)
def decide(
    event_id: str, body: DecisionCreate, principal: ReviewerDep, session: SessionDep
) -> DecisionPublic:
    """Append a decision; it supersedes the previous one, which stays as it was."""
    event = _flagged(session, event_id)
    previous = session.scalar(
        select(Decision.id)
        .where(Decision.event_id == event_id)
        .order_by(Decision.id.desc())
        .limit(1)
    )
    decision = Decision(
        event_id=event_id,
        user_id=principal.user_id,
        outcome=body.outcome.value,
        comment=body.comment,
        supersedes=previous,
        decided_at=datetime.now(UTC),
    )
    session.add(decision)
    event.review_status = ReviewStatus.DECIDED
    session.merge(
        ReviewMark(user_id=principal.user_id, event_id=event_id, reviewed_at=datetime.now(UTC))
    )
    session.flush()
    audit.append(
        session,
        principal.actor,
        "review.decision",
        f"event:{event_id}",
        {
            "decision_id": decision.id,
            "outcome": body.outcome.value,
            "comment": body.comment,
            "supersedes": previous,
        },
    )
    session.commit()
    return DecisionPublic.model_validate(decision)


@router.get("/events/{event_id}/decisions")
def decisions(event_id: str, principal: ReviewerDep, session: SessionDep) -> list[DecisionPublic]:
    """Every decision on an event, oldest first."""
    _flagged(session, event_id)
    rows = session.scalars(
        select(Decision).where(Decision.event_id == event_id).order_by(Decision.id)
    )
    return [DecisionPublic.model_validate(d) for d in rows]


@router.post("/events/{event_id}/reviewed", status_code=204)
def mark_reviewed(event_id: str, principal: ReviewerDep, session: SessionDep) -> None:
    """Mark an event as looked at by the calling user (per-user state)."""
    _flagged(session, event_id)
    session.merge(
        ReviewMark(user_id=principal.user_id, event_id=event_id, reviewed_at=datetime.now(UTC))
    )
    session.commit()


@router.delete("/events/{event_id}/reviewed", status_code=204)
def unmark_reviewed(event_id: str, principal: ReviewerDep, session: SessionDep) -> None:
    """Clear the calling user's reviewed mark."""
    _flagged(session, event_id)
    mark = session.get(ReviewMark, (principal.user_id, event_id))
    if mark is not None:
        session.delete(mark)
    session.commit()
