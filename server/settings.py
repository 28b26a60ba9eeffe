"""Server settings, read from `JIFANG_*` environment variables by a factory (never at import)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, model_validator
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
    readyz_min_free_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=0,
        description="/readyz reports not ready when the data folder has less free space than "
        "this (evidence and SQLite writes would start failing with ENOSPC)",
    )
    busy_retry_after_s: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="Retry-After of the 503 answered when the database is locked or unreachable",
    )
    device_max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=200 * 1024 * 1024,
        description="largest signed device request (a batch or an evidence image)",
    )
    user_max_request_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="largest request body on user routes (login, forms, JSON) that declare no "
        "larger upload; cut off while it streams in, chunked bodies included (413)",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="bearer token a Prometheus scraper sends to /metrics; an admin's token "
        "works too; empty means admins only",
    )
    session_cookie_secure: bool | None = Field(
        default=None,
        description="mark the session cookie Secure: true behind a TLS proxy, false never, "
        "empty: when the request came over HTTPS (X-Forwarded-Proto counts only from "
        "trusted_proxies)",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="comma-separated addresses whose X-Forwarded-For/-Proto headers are "
        "believed ('*' for all)",
    )
    max_batch_events: int = Field(default=1000, ge=1, le=10_000)
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    login_max_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="failed logins for one username within login_window_s before it is locked",
    )
    login_address_max_failures: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="failed logins from one client address (any usernames) within "
        "login_window_s before the address is locked (an office behind one NAT shares it)",
    )
    login_window_s: int = Field(
        default=15 * 60,
        ge=1,
        le=7 * 86_400,
        description="failures count from the first one in a window this long, then start over",
    )
    login_lockout_s: int = Field(
        default=15 * 60,
        ge=1,
        le=7 * 86_400,
        description="a locked username or address answers 429 for this long, even to the "
        "right password",
    )
    language: str = Field(default="zh-CN", pattern=r"^(zh-CN|en)$")
    model_dir: Path | None = Field(
        default=None, description="model directory; empty means models.store.default_model_dir()"
    )
    face_pack: str = Field(
        default="jifang-open", min_length=1, description="pack whose embeddings galleries carry"
    )
    enroll_min_face_px: int = Field(
        default=60, ge=20, le=2000, description="shorter side of the face box in an ID photo, px"
    )
    enroll_min_sharpness: float = Field(
        default=0.2, ge=0.0, le=1.0, description="normalised Laplacian-variance score"
    )
    enroll_max_templates: int = Field(
        default=8,
        ge=1,
        le=64,
        description="templates kept per operator (certificate photo + on-site captures); "
        "several templates cut false non-matches (bench/population_detail.json)",
    )
    template_capture: bool = Field(
        default=True,
        description="add the evidence frame of a start AUTHORIZED under a 1:1 claim, with "
        "liveness settled by the passive check alone, as a template (quality-gated like an "
        "ID photo; the oldest such capture is replaced at enroll_max_templates)",
    )
    enroll_max_yaw_deg: float = Field(default=25.0, ge=0.0, le=90.0)
    enroll_max_pitch_deg: float = Field(default=25.0, ge=0.0, le=90.0)
    enroll_min_exposure: float = Field(
        default=0.25, ge=0.0, le=1.0, description="score: 0 = black/blown-out, 1 = well exposed"
    )
    photo_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024, description="per ID photo"
    )
    import_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="upload limit of one sync request"
    )
    import_max_office_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="office file of an import: a CSV or JSON file's bytes, or an XLSX's parts "
        "uncompressed together (a 100,000-row XLSX is about 45 MB uncompressed)",
    )
    import_max_uncompressed_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="photo ZIP of an import: its entries uncompressed together, as declared "
        "and as actually inflated",
    )
    import_max_zip_entries: int = Field(
        default=20_000, ge=1, description="entries in a photo ZIP or an XLSX"
    )
    import_max_rows: int = Field(
        default=100_000, ge=1, description="sheet rows below the header (or JSON records)"
    )
    import_max_columns: int = Field(
        default=64, ge=12, le=16_384, description="cells in one sheet row"
    )
    clock_skew_s: int = Field(
        default=300, ge=1, le=3600, description="device timestamps further off are refused"
    )
    claim_ttl_s: int = Field(
        default=30 * 60, ge=60, le=7 * 86_400, description="a review claim lapses after this"
    )
    device_offline_after_s: int = Field(
        default=15 * 60,
        ge=30,
        le=7 * 86_400,
        description="a device not heard from (heartbeat or events) for this long is offline",
    )
    fill_link_tolerance_s: float = Field(
        default=1.0,
        ge=0.0,
        le=60.0,
        description="fills of agents before schema 1.3 carry no violation ids: a violation "
        "counts as theirs when it lies inside the fill's start..end widened by this much "
        "(both stamps come from the agent's clock, so the slack only covers rounding)",
    )
    fill_link_max_fill_s: int = Field(
        default=30 * 60,
        ge=60,
        le=86_400,
        description="longest fill the server looks back over when an older agent's violation "
        "arrives after its fill",
    )
    web_show_template_thumbnails: bool = Field(
        default=False,
        description="show operators' enrolment photos on the operator page (privacy: off)",
    )
    web_timezone: str = Field(
        default="Asia/Shanghai", min_length=1, description="zone the web pages show times in"
    )
    web_page_size: int = Field(default=50, ge=5, le=500, description="review queue rows per page")
    web_timeline_window_s: int = Field(
        default=10 * 60,
        ge=60,
        le=86_400,
        description="an event page lists the same device's events this far before and after",
    )
    web_dashboard_days: int = Field(
        default=14, ge=1, le=366, description="days of violations the dashboard charts"
    )
    web_cert_expiring_days: int = Field(
        default=30,
        ge=0,
        le=366,
        description="certificates expiring within this many days stand out",
    )

    audit_key: SecretStr | None = Field(
        default=None,
        description="HMAC-SHA256 key of the audit chain as 64+ hex characters "
        "(JIFANG_AUDIT_KEY); takes precedence over audit_key_file",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="file holding the audit chain key (hex); empty means "
        "<data_dir>/keys/audit_hmac.key, created with mode 0600 on first start. Keep it (or a "
        "copy) outside the database's backups: whoever holds it can re-seal an edited chain",
    )

    @model_validator(mode="after")
    def _check_timezone(self) -> ServerSettings:
        try:
            ZoneInfo(self.web_timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"web_timezone {self.web_timezone!r} is not a known zone") from err
        return self

    @model_validator(mode="after")
    def _fill_database_url(self) -> ServerSettings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.data_dir / 'jifang.db').as_posix()}"
            )
        return self

    @property
    def evidence_dir(self) -> Path:
        """Where evidence images are stored, content-addressed."""
        return self.data_dir / "evidence"

    @property
    def key_dir(self) -> Path:
        """Where the server's Ed25519 signing key lives."""
        return self.data_dir / "keys"

    @property
    def audit_key_path(self) -> Path:
        """The audit key file: `audit_key_file`, or the default one in the key folder."""
        return self.audit_key_file or self.key_dir / "audit_hmac.key"


def get_settings() -> ServerSettings:
    """Build settings from the current environment."""
    return ServerSettings()
