"""Log in and out with a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from server.api.deps import PUBLIC, SessionDep, SettingsDep, StaffDep
from server.schemas import LoginRequest, TokenPublic, UserPublic
from server.security import LoginRefused, log_in, log_out

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/login", dependencies=[PUBLIC])
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> TokenPublic:
    """Exchange username and password for a bearer token."""
    try:
        user, token, expires = log_in(session, body.username, body.password, settings.session_ttl_s)
    except LoginRefused:
        raise HTTPException(401, "wrong username or password") from None
    session.commit()
    return TokenPublic(access_token=token, expires_at=expires, role=user.role)


@router.post("/logout", status_code=204)
def logout(principal: StaffDep, session: SessionDep, request: Request) -> Response:
    """End the current session."""
    token = request.headers.get("Authorization", "").partition(" ")[2].strip()
    log_out(session, token, principal.actor)
    session.commit()
    return Response(status_code=204)


@router.get("/me")
def me(principal: StaffDep) -> UserPublic:
    """The logged-in user."""
    return UserPublic.model_validate(principal.user)
