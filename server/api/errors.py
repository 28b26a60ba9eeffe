"""Exception handlers: a busy or unreachable database answers 503 with Retry-After, not 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from server.settings import ServerSettings

logger = logging.getLogger(__name__)

_BUSY_SQLSTATES = frozenset({"55P03", "40P01", "57014"})
"""PostgreSQL lock_not_available (lock_timeout), deadlock_detected, query_canceled
(statement_timeout): the database is there but busy."""
_BUSY_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_busy(err: OperationalError) -> bool:
    """The database refused because of a lock or timeout (worth retrying soon)."""
    if getattr(err.orig, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    text = str(err.orig).lower()
    return any(marker in text for marker in _BUSY_SQLITE)


def install_database_errors(app: FastAPI, settings: ServerSettings) -> None:
    """Answer OperationalError (locked, timed out, unreachable, disk full) with 503."""
    retry_after = str(settings.busy_retry_after_s)

    async def operational(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OperationalError)  # registered for OperationalError only
        busy = is_busy(exc)
        logger.warning(
            "%s %s: database %s: %s",
            request.method,
            request.url.path,
            "busy" if busy else "unavailable",
            exc.orig,
        )
        return JSONResponse(
            {"detail": "database busy" if busy else "database unavailable"},
            status_code=503,
            headers={"Retry-After": retry_after},
        )

    app.add_exception_handler(OperationalError, operational)
