"""Log in and out with a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response

from server.api.deps import PUBLIC, SessionDep, SettingsDep, StaffDep
from server.schemas import LoginRequest, TokenPublic, UserPublic
from server.security import LoginRefused, LoginThrottled, log_in, log_out

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def client_address(request: Request) -> str:
    """The caller's address, which the login throttle counts failures of.

    Behind a reverse proxy this is the proxy's unless uvicorn trusts its X-Forwarded-For
    (uvicorn's FORWARDED_ALLOW_IPS, 127.0.0.1 by default).
    """
    return request.client.host if request.client is not None else "unknown"


@router.post(
    "/login",
    dependencies=[PUBLIC],
    responses={401: {"description": "wrong username or password"}, 429: {"description": "locked"}},
)
def login(
    body: LoginRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenPublic:
    """Exchange username and password for a bearer token."""
    try:
        user, token, expires = log_in(
            session, body.username, body.password, client_address(request), settings
        )
    except LoginThrottled as locked:
        raise HTTPException(
            429,
            "too many failed logins, try again later",
            headers={"Retry-After": str(locked.retry_after_s)},
        ) from None
    except LoginRefused:
        raise HTTPException(401, "wrong username or password") from None
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
