"""Log in and out with a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import delete, select

from server import audit
from server.api.deps import PUBLIC, SessionDep, SettingsDep, StaffDep
from server.schemas import LoginRequest, TokenPublic, UserPublic
from server.security import check_password, issue_token, token_digest
from server.tables import ApiToken, User

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/login", dependencies=[PUBLIC])
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> TokenPublic:
    """Exchange username and password for a bearer token."""
    user = session.scalar(select(User).where(User.username == body.username))
    if user is None or not user.active or not check_password(user.password_hash, body.password):
        raise HTTPException(401, "wrong username or password")
    token, expires = issue_token(session, user, settings.session_ttl_s)
    audit.append(session, f"user:{user.username}", "auth.login", f"user:{user.username}", {})
    session.commit()
    return TokenPublic(access_token=token, expires_at=expires, role=user.role)


@router.post("/logout", status_code=204)
def logout(principal: StaffDep, session: SessionDep, request: Request) -> Response:
    """End the current session."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    session.execute(delete(ApiToken).where(ApiToken.token_sha256 == token_digest(token)))
    audit.append(session, principal.actor, "auth.logout", principal.actor, {})
    session.commit()
    return Response(status_code=204)


@router.get("/me")
def me(principal: StaffDep) -> UserPublic:
    """The logged-in user."""
    return UserPublic.model_validate(principal.user)
