"""Database engine construction for the server (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Engine, Table, create_engine, event, insert
from sqlalchemy.orm import Session, sessionmaker

from server.settings import ServerSettings

if TYPE_CHECKING:
    from server.audit import AuditKey

logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the review pages read while events are being ingested; foreign keys are off
    # by default in SQLite and the schema relies on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for `url`, with the SQLite pragmas the server relies on."""
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)

    logger.debug("database engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def engine_from_settings(settings: ServerSettings) -> Engine:
    """Create the engine named by the settings, making the data folder for SQLite."""
    if settings.database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.database_url)


def session_factory(engine: Engine, audit_key: AuditKey | None = None) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (routes return them).

    Sessions that write to the audit chain need the audit key (`server.audit.append`).
    """
    from server.audit import session_info

    return sessionmaker(engine, expire_on_commit=False, info=session_info(audit_key))


def prepared_engine(settings: ServerSettings, audit_key: AuditKey | None = None) -> Engine:
    """The settings' engine with the schema created or migrated to the latest revision.

    Migrations that seal audit rows already stored need the audit key.
    """
    from server.migrate import upgrade

    engine = engine_from_settings(settings)
    upgrade(engine, audit_key=audit_key)
    return engine


def insert_rows(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert many rows: COPY on PostgreSQL for plain columns, else a Core executemany."""
    if not rows:
        return
    target: Table = getattr(table, "__table__", table)
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        _copy_rows(session, target, rows)
    else:
        session.execute(insert(target), rows)


COPY_MIN_ROWS = 20
"""Below this many rows an INSERT is as quick as setting up a COPY."""


def _copy_rows(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    from psycopg.types.json import Json

    columns = [c.name for c in table.columns]
    as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
    quoted = ", ".join(f'"{name}"' for name in columns)
    raw = session.connection().connection.driver_connection
    assert raw is not None  # a live psycopg connection inside the session's transaction
    with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
        for row in rows:
            values = [_copy_default(table, name, row) for name in columns]
            copy.write_row(
                [
                    Json(v) if n in as_json and v is not None else v
                    for n, v in zip(columns, values, strict=True)
                ]
            )


def _copy_default(table: Table, name: str, row: dict[str, Any]) -> Any:
    if name in row:
        return row[name]
    default = table.columns[name].default
    if default is not None and getattr(default, "is_scalar", False):
        return getattr(default, "arg", None)
    return None
