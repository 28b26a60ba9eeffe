"""Database engine construction for the server (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from server.settings import ServerSettings

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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (routes return them)."""
    return sessionmaker(engine, expire_on_commit=False)


def prepared_engine(settings: ServerSettings) -> Engine:
    """The settings' engine with the schema created or migrated to the latest revision."""
    from server.migrate import upgrade

    engine = engine_from_settings(settings)
    upgrade(engine)
    return engine
