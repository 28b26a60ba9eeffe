"""User passwords (argon2), bearer tokens (random, stored as SHA-256) and the login throttle."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from server import audit
from server.domain import Role
from server.settings import ServerSettings
from server.tables import ApiToken, LoginThrottle, User, UtcDateTime

logger = logging.getLogger(__name__)

_hasher = PasswordHasher()

DUMMY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$zLpHvm4g2U7PVjTM+vKASg$YweeFs2F5LzFS9QC3RmVzP3F6qqsoWEr49mNp9rcohQ"
"""An argon2id hash of a random password nobody kept, with the hasher's parameters.

Checked against when the username is unknown, so an unknown user costs the same hash check
as a known one and the answer's timing does not tell usernames apart.
"""
THROTTLE_KEY_MAX = 64
"""LoginThrottle.key's length: longer usernames or addresses are cut to it."""


class LoginRefused(Exception):
    """Unknown user, inactive user or wrong password (deliberately not told apart)."""


class LoginThrottled(Exception):
    """Too many failed logins for the username or the address: refused without a check."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"login locked, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ThrottleScope(StrEnum):
    """What a LoginThrottle row counts failures of."""

    USER = "user"
    ADDRESS = "address"


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
    session: Session, username: str, password: str, address: str, settings: ServerSettings
) -> tuple[User, str, datetime]:
    """Check the password under the login throttle, issue a token and audit the login.

    Commits its own steps: the attempt is counted and committed before the slow hash check,
    so parallel guesses in other requests and workers already see it. Every failure and every
    lockout is audited (username and address, never the password).

    Raises LoginThrottled while the username or the address is locked (the password is not
    checked, even a right one), LoginRefused for an unknown, inactive or wrong-password user.
    """
    now = datetime.now(UTC)
    keys = {
        ThrottleScope.USER: username[:THROTTLE_KEY_MAX],
        ThrottleScope.ADDRESS: address[:THROTTLE_KEY_MAX],
    }
    counts = _admit(session, keys, now, settings)
    user = session.scalar(select(User).where(User.username == username))
    # One hash check on every path, also for unknown and inactive users (timing).
    valid = check_password(user.password_hash if user is not None else DUMMY_HASH, password)
    if user is None or not user.active or not valid:
        reason = "unknown_user" if user is None else "inactive" if not user.active else "password"
        _record_failure(session, keys, counts, reason, now, settings)
        raise LoginRefused(username)
    # A success clears the user's count; the address keeps its failures (one valid account
    # must not reset the count of guesses against the others).
    session.execute(delete(LoginThrottle).where(_row(ThrottleScope.USER, keys[ThrottleScope.USER])))
    _uncount(session, ThrottleScope.ADDRESS, keys[ThrottleScope.ADDRESS])
    token, expires = issue_token(session, user, settings.session_ttl_s)
    audit.append(session, f"user:{user.username}", "auth.login", f"user:{user.username}", {})
    session.commit()
    return user, token, expires


def _admit(
    session: Session, keys: dict[ThrottleScope, str], now: datetime, settings: ServerSettings
) -> dict[ThrottleScope, int]:
    """Count the attempt against each key (committed), or raise LoginThrottled unchecked."""
    _forget_stale(session, now, settings.login_window_s)
    session.commit()
    # A cheap read first: a locked key's attempts are refused without writing anything.
    if (locked := _locked_until(session, keys, now)) is not None:
        logger.info(
            "login for %r from %s refused: locked",
            keys[ThrottleScope.USER],
            keys[ThrottleScope.ADDRESS],
        )
        raise LoginThrottled(_seconds_until(locked, now))
    counts: dict[ThrottleScope, int] = {}
    locks: list[datetime] = []
    for scope, key in keys.items():
        failures, locked_until = _count_attempt(session, scope, key, now, settings)
        if locked_until is not None:
            locks.append(locked_until)  # locked since the read: not counted
        else:
            counts[scope] = failures
    over = [scope for scope, count in counts.items() if count > _limit(scope, settings)]
    if locks or over:
        # Attempts checked in parallel took the last tries: this one goes unchecked and
        # off the counts again.
        for scope in counts:
            _uncount(session, scope, keys[scope])
        lockouts = [
            _lock(session, scope, keys[scope], counts[scope], now, settings) for scope in over
        ]
        _audit_lockouts(session, lockouts)
        session.commit()
        until = max(locks, default=now + timedelta(seconds=settings.login_lockout_s))
        raise LoginThrottled(_seconds_until(until, now))
    session.commit()
    return counts


def _record_failure(
    session: Session,
    keys: dict[ThrottleScope, str],
    counts: dict[ThrottleScope, int],
    reason: str,
    now: datetime,
    settings: ServerSettings,
) -> None:
    """Audit a failed login and lock each key it brought to its limit (commits)."""
    lockouts = [
        _lock(session, scope, keys[scope], count, now, settings)
        for scope, count in counts.items()
        if count >= _limit(scope, settings)
    ]
    address = keys[ThrottleScope.ADDRESS]
    audit.append(
        session,
        f"address:{address}",
        "auth.login_failed",
        f"user:{keys[ThrottleScope.USER]}",
        {
            "username": keys[ThrottleScope.USER],
            "address": address,
            "reason": reason,
            "failures": counts[ThrottleScope.USER],
            "address_failures": counts[ThrottleScope.ADDRESS],
        },
    )
    _audit_lockouts(session, lockouts)
    session.commit()


def _limit(scope: ThrottleScope, settings: ServerSettings) -> int:
    if scope is ThrottleScope.USER:
        return settings.login_max_failures
    return settings.login_address_max_failures


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _seconds_until(until: datetime, now: datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


def _row(scope: ThrottleScope, key: str) -> ColumnElement[bool]:
    return and_(LoginThrottle.scope == scope, LoginThrottle.key == key)


def _forget_stale(session: Session, now: datetime, window_s: int) -> None:
    """Delete rows whose window is over and which hold no running lock."""
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_start < now - timedelta(seconds=window_s),
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
        )
    )


def _locked_until(
    session: Session, keys: dict[ThrottleScope, str], now: datetime
) -> datetime | None:
    """The latest running lock on any of `keys`, if one is running."""
    locks: Sequence[datetime | None] = session.scalars(
        select(LoginThrottle.locked_until).where(
            or_(*(_row(scope, key) for scope, key in keys.items())),
            LoginThrottle.locked_until > now,
        )
    ).all()
    running = [_utc(lock) for lock in locks if lock is not None]
    return max(running) if running else None


def _count_attempt(
    session: Session, scope: ThrottleScope, key: str, now: datetime, settings: ServerSettings
) -> tuple[int, datetime | None]:
    """Count one attempt against `key` in one statement (the row lock orders workers).

    Returns the failures in the window with this attempt and, if the key is locked, the end
    of its lock (a locked key's attempt is not counted). A window that is over, or a lock
    that has ended, starts the count afresh.
    """
    running = LoginThrottle.locked_until > now  # NULL (no lock) counts as not running
    fresh = or_(
        LoginThrottle.window_start < now - timedelta(seconds=settings.login_window_s),
        LoginThrottle.locked_until <= now,
    )
    at_now = literal(now, UtcDateTime)
    values = {"scope": scope, "key": key, "failures": 1, "window_start": now}
    changes = {
        "failures": case(
            (running, LoginThrottle.failures), (fresh, 1), else_=LoginThrottle.failures + 1
        ),
        "window_start": case(
            (running, LoginThrottle.window_start), (fresh, at_now), else_=LoginThrottle.window_start
        ),
        "locked_until": case((running, LoginThrottle.locked_until), else_=None),
    }
    conflict = [LoginThrottle.scope, LoginThrottle.key]
    returned = (LoginThrottle.failures, LoginThrottle.locked_until)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(LoginThrottle).values(values)
        upsert = pg.on_conflict_do_update(index_elements=conflict, set_=changes)
        row = session.execute(upsert.returning(*returned)).one()
    elif dialect == "sqlite":
        lite = sqlite.insert(LoginThrottle).values(values)
        upsert_lite = lite.on_conflict_do_update(index_elements=conflict, set_=changes)
        row = session.execute(upsert_lite.returning(*returned)).one()
    else:
        raise RuntimeError(f"login throttle needs SQLite or PostgreSQL, not {dialect}")
    return int(row[0]), _utc(row[1]) if row[1] is not None else None


def _uncount(session: Session, scope: ThrottleScope, key: str) -> None:
    """Take back an attempt that was not a failure."""
    session.execute(
        update(LoginThrottle)
        .where(_row(scope, key), LoginThrottle.failures > 0)
        .values(failures=LoginThrottle.failures - 1)
    )


def _lock(
    session: Session,
    scope: ThrottleScope,
    key: str,
    failures: int,
    now: datetime,
    settings: ServerSettings,
) -> dict[str, object] | None:
    """Lock `key` for login_lockout_s unless a lock is running; what to audit if it locked."""
    until = now + timedelta(seconds=settings.login_lockout_s)
    locked = session.execute(
        update(LoginThrottle)
        .where(
            _row(scope, key),
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
        )
        .values(locked_until=until)
        .returning(LoginThrottle.key)
    ).first()
    if locked is None:
        return None
    logger.warning("login %s %r locked after %d failures", scope, key, failures)
    return {
        "scope": str(scope),
        "key": key,
        "failures": failures,
        "until": until.isoformat(timespec="seconds"),
        "lockout_s": settings.login_lockout_s,
    }


def _audit_lockouts(session: Session, lockouts: list[dict[str, object] | None]) -> None:
    # Audited after every throttle row is written: each transaction takes the throttle rows
    # (user, then address) before the audit head, so concurrent logins cannot deadlock.
    for lockout in lockouts:
        if lockout is not None:
            target = f"{lockout['scope']}:{lockout['key']}"
            audit.append(session, "server", "auth.lockout", target, lockout)


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
