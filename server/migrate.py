"""Apply the Alembic migrations in server/migrations to a database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

if TYPE_CHECKING:
    from server.audit import AuditKey

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


AUDIT_KEY_ATTRIBUTE = "audit_key"
"""config.attributes entry holding the server.audit.AuditKey for migrations that seal rows."""


def alembic_config(engine: Engine, audit_key: AuditKey | None = None) -> Config:
    """An Alembic config that runs on `engine` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    config.attributes[AUDIT_KEY_ATTRIBUTE] = audit_key
    return config


def upgrade(engine: Engine, revision: str = "head", audit_key: AuditKey | None = None) -> None:
    """Create or migrate the schema to `revision` (with the audit key where rows are sealed)."""
    command.upgrade(alembic_config(engine, audit_key), revision)
    logger.debug("schema at %s on %s", revision, engine.url.render_as_string(hide_password=True))


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty one."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
