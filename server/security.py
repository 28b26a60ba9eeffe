"""User passwords (argon2) and bearer tokens (random, stored as SHA-256)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server import audit
from server.domain import Role
from server.tables import ApiToken, User

_hasher = PasswordHasher()


class LoginRefused(Exception):
    """Unknown user, inactive user or wrong password (deliberately not told apart)."""


def hash_password(password: str) -> str:
    """An argon2id hash of the password."""
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> bool:
    """Whether `password` matches the stored hash."""
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user: User, ttl_s: int) -> tuple[str, datetime]:
    """A fresh bearer token for `user` and its expiry."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = now + timedelta(seconds=ttl_s)
    session.add(
        ApiToken(
            token_sha256=token_digest(token), user_id=user.id, created_at=now, expires_at=expires
        )
    )
    return token, expires


def log_in(
    session: Session, username: str, password: str, ttl_s: int
) -> tuple[User, str, datetime]:
    """Check the password, issue a token and audit the login (the caller commits).

    Raises LoginRefused for an unknown, inactive or wrong-password user.
    """
    user = session.scalar(select(User).where(User.username == username))
    if user is None or not user.active or not check_password(user.password_hash, password):
        raise LoginRefused(username)
    token, expires = issue_token(session, user, ttl_s)
    audit.append(session, f"user:{user.username}", "auth.login", f"user:{user.username}", {})
    return user, token, expires


def log_out(session: Session, token: str, actor: str) -> None:
    """End the session of `token` and audit it (the caller commits)."""
    session.execute(delete(ApiToken).where(ApiToken.token_sha256 == token_digest(token)))
    audit.append(session, actor, "auth.logout", actor, {})


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a live token belongs to."""
    row = session.execute(
        select(User, ApiToken.expires_at)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_sha256 == token_digest(token))
    ).first()
    if row is None:
        return None
    user, expires = row
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires < datetime.now(UTC) or not user.active:
        return None
    return user


def create_user(
    session: Session, username: str, password: str, role: Role, display_name: str = ""
) -> User:
    """Add a user (the caller commits and audits)."""
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=str(role),
        display_name=display_name,
        active=True,
        created_at=datetime.now(UTC),
    )
    session.add(user)
    session.flush()
    return user
