"""The review queue: filter flagged events, claim, decide (append-only), mark reviewed."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy.orm import Session

from contract.codes import Severity
from server import review
from server.api.deps import ReviewerDep, SessionDep, SettingsDep
from server.domain import ReviewStatus
from server.schemas import DecisionCreate, DecisionPublic, EventPublic
from server.tables import Event

router = APIRouter(prefix="/api/v1/review", tags=["review"])


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
    """Review items, newest first, filtered (a fill folded into its violation's item is not
    listed apart: the item carries it under `fill` and `covers`)."""
    spec = review.QueueFilter(
        site=site,
        device=device,
        kind=kind,
        severity=severity,
        status=status,
        since=since,
        until=until,
        unreviewed_by=principal.user_id if unreviewed_by_me else None,
    )
    return [
        review.event_public(session, e, principal.user_id, body=False)
        for e in review.queue(session, spec, limit, offset)
    ]


def _flagged(session: Session, event_id: str) -> Event:
    try:
        return review.flagged(session, event_id)
    except review.EventNotFound:
        raise HTTPException(404, "flagged event not found") from None
    except review.Covered as err:
        # The fill is reviewed on its violation's item; Location names that item.
        raise HTTPException(
            409,
            "covered by another review item",
            headers={"Location": f"/api/v1/review/events/{err.item_id}"},
        ) from None


@router.get("/events/{event_id}")
def get_flagged(event_id: str, principal: ReviewerDep, session: SessionDep) -> EventPublic:
    """One flagged event with its body."""
    return review.event_public(session, _flagged(session, event_id), principal.user_id, body=True)


@router.post("/events/{event_id}/claim")
def claim(
    event_id: str, principal: ReviewerDep, session: SessionDep, settings: SettingsDep
) -> EventPublic:
    """Take an event; refused while someone else's claim is fresh."""
    event = _flagged(session, event_id)
    try:
        review.claim(session, event, principal.user_id, principal.actor, settings.claim_ttl_s)
    except review.ClaimConflict:
        raise HTTPException(409, "claimed by another reviewer") from None
    session.commit()
    return review.event_public(session, event, principal.user_id, body=False)


@router.post("/events/{event_id}/decisions", status_code=201)
def decide(
    event_id: str, body: DecisionCreate, principal: ReviewerDep, session: SessionDep
) -> DecisionPublic:
    """Append a decision; it supersedes the previous one, which stays as it was."""
    event = _flagged(session, event_id)
    decision = review.decide(
        session, event, principal.user_id, principal.actor, body.outcome, body.comment
    )
    session.commit()
    return DecisionPublic.model_validate(decision)


@router.get("/events/{event_id}/decisions")
def decisions(event_id: str, principal: ReviewerDep, session: SessionDep) -> list[DecisionPublic]:
    """Every decision on a review item (a folded fill's included), oldest first."""
    item = _flagged(session, event_id)
    return [DecisionPublic.model_validate(d) for d in review.decisions(session, item)]


@router.post("/events/{event_id}/reviewed", status_code=204)
def mark_reviewed(event_id: str, principal: ReviewerDep, session: SessionDep) -> None:
    """Mark an event as looked at by the calling user (per-user state)."""
    _flagged(session, event_id)
    review.mark_reviewed(session, event_id, principal.user_id)
    session.commit()


@router.delete("/events/{event_id}/reviewed", status_code=204)
def unmark_reviewed(event_id: str, principal: ReviewerDep, session: SessionDep) -> None:
    """Clear the calling user's reviewed mark."""
    _flagged(session, event_id)
    review.unmark_reviewed(session, event_id, principal.user_id)
    session.commit()
