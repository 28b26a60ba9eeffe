"""User accounts (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from server import audit
from server.api.deps import AdminDep, SessionDep
from server.schemas import UserCreate, UserPublic
from server.security import create_user
from server.tables import User

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.post("", status_code=201)
def add_user(body: UserCreate, principal: AdminDep, session: SessionDep) -> UserPublic:
    """Create a user."""
    if session.scalar(select(User.id).where(User.username == body.username)) is not None:
        raise HTTPException(409, "username taken")
    user = create_user(session, body.username, body.password, body.role, body.display_name)
    audit.append(
        session, principal.actor, "user.create", f"user:{user.username}", {"role": body.role}
    )
    session.commit()
    return UserPublic.model_validate(user)


@router.get("")
def list_users(principal: AdminDep, session: SessionDep) -> list[UserPublic]:
    """Every user."""
    return [UserPublic.model_validate(u) for u in session.scalars(select(User).order_by(User.id))]
