"""Server settings, read from `JIFANG_*` environment variables by a factory (never at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "jifang" / "server"


class ServerSettings(BaseSettings):
    """Everything the server process needs; defaults give the embedded SQLite setup."""

    model_config = SettingsConfigDict(env_prefix="JIFANG_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="folder for the SQLite database, evidence files and the server key",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means SQLite at <data_dir>/jifang.db",
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8000, ge=0, le=65535)
    evidence_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="per evidence image"
    )
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    language: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")

    @model_validator(mode="after")
    def _fill_database_url(self) -> ServerSettings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.data_dir / 'jifang.db').as_posix()}"
            )
        return self


def get_settings() -> ServerSettings:
    """Build settings from the current environment."""
    return ServerSettings()
