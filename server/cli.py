"""`jifang server ...`: run, migrate, import, audit verify and checkpoint, event bundles.

Every command that touches the database creates or migrates the schema first, and honours
JIFANG_DATABASE_URL and JIFANG_DATA_DIR.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from server.audit import AuditKey, Checkpoint
    from server.settings import ServerSettings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Run and administer the central server.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(user_app, name="user")

LIST_LIMIT = 50
"""How many certificate numbers per diff class the dry run prints before summarising."""


def _echo(text: str) -> None:
    typer.echo(text)


def _open_database(create_key: bool) -> tuple[ServerSettings, AuditKey, Engine]:
    """Settings, the audit key and the migrated engine; exit 2 with the reason on a key error.

    Commands that write create the key on first use and refuse a key that did not seal the
    chain; `audit verify` and `audit checkpoint` only ever load it.
    """
    from server import audit
    from server.db import prepared_engine, session_factory
    from server.settings import get_settings

    settings = get_settings()
    try:
        key = audit.ensure_key(settings) if create_key else audit.load_key(settings)
        engine = prepared_engine(settings, key)
        if create_key:
            with session_factory(engine, key)() as session:
                audit.check_key(session, key)
    except audit.AuditKeyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    return settings, key, engine


@app.command()
def migrate() -> None:
    """Create or migrate the database schema to the latest revision."""
    from server.migrate import current_revision

    _, _, engine = _open_database(create_key=True)
    _echo(f"schema at revision {current_revision(engine)}")
    engine.dispose()


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="listen address (JIFANG_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (JIFANG_PORT)")] = None,
) -> None:
    """Serve the API (SQLite in the data directory unless JIFANG_DATABASE_URL is set)."""
    import uvicorn

    from server.app import create_app
    from server.audit import AuditKeyError
    from server.settings import get_settings

    settings = get_settings()
    try:
        application = create_app(settings)
    except AuditKeyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".csv, .xlsx or .json")],
    photos: Annotated[
        Path | None, typer.Option("--photos", exists=True, dir_okay=False, help="ZIP of photos")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the diff, change nothing")
    ] = False,
    partial: Annotated[
        bool, typer.Option("--partial", help="apply the good rows even when some are bad")
    ] = False,
    site: Annotated[str | None, typer.Option(help="site for rows without 工作场所")] = None,
) -> None:
    """Import a certification-office export (idempotent upsert by certificate number)."""
    from tqdm import tqdm

    from server.db import session_factory
    from server.faces import FaceService
    from server.importer import ImportFileError, ImportLimits, run_import

    settings, key, engine = _open_database(create_key=True)
    data = file.read_bytes()
    with (
        session_factory(engine, key)() as session,
        tqdm(desc="rows", unit="row", disable=None, leave=False) as bar,
    ):
        try:
            report = run_import(
                session,
                file.name,
                data,
                photos=photos.read_bytes() if photos else None,
                faces=FaceService(settings) if photos else None,
                dry_run=dry_run,
                partial=partial,
                actor="cli",
                default_site=site,
                limits=ImportLimits.from_settings(settings),
                progress=bar.update,
            )
        except ImportFileError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=1) from err
        if report.applied:
            session.commit()
    engine.dispose()
    for error in report.errors:
        typer.echo(f"row {error.row}, {error.field}: {error.message}", err=True)
    if report.errors and not partial:
        typer.echo(
            f"rejected: {len(report.rejected_rows)} bad row(s); nothing was imported "
            "(--partial imports the good rows)",
            err=True,
        )
        raise typer.Exit(code=1)
    for label, numbers in (
        ("added", report.added),
        ("changed", report.changed),
        ("revoked", report.revoked),
        ("unchanged", report.unchanged),
    ):
        shown = ", ".join(numbers[:LIST_LIMIT])
        more = f" (+{len(numbers) - LIST_LIMIT} more)" if len(numbers) > LIST_LIMIT else ""
        _echo(
            f"{label}: {len(numbers)}"
            + (f"  {shown}{more}" if numbers and label != "unchanged" else "")
        )
    _echo(f"templates added: {report.templates_added}")
    _echo("dry run: nothing changed" if dry_run else f"imported {report.rows} row(s)")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", exists=True, dir_okay=False, help="a checkpoint written earlier"
        ),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="server public key (base64) the checkpoint is checked with"),
    ] = None,
) -> None:
    """Walk the chain and every event row; name each edited, inserted or deleted one (exit 1).

    With --checkpoint, also prove the chain still holds the head the server signed then.
    Exit 2 when the audit key or the checkpoint cannot be used.
    """
    from server import audit
    from server.db import session_factory

    settings, key, engine = _open_database(create_key=False)
    head = _read_checkpoint(checkpoint, public_key, settings) if checkpoint else None
    with session_factory(engine, key)() as session:
        problems = audit.verify(session, head)
        count = session.execute(audit.count_query()).scalar_one()
    engine.dispose()
    for problem in problems:
        typer.echo(str(problem), err=True)
    if problems:
        raise typer.Exit(code=1)
    against = f"; holds the checkpoint of {head.at} (row {head.seq})" if head else ""
    _echo(f"audit chain intact: {count} entries (audit key {key.key_id}){against}")


def _read_checkpoint(path: Path, public_key: str | None, settings: ServerSettings) -> Checkpoint:
    from server import audit, keys

    if public_key is None:
        if not (settings.key_dir / keys.KEY_FILE).exists():
            typer.echo(
                f"error: no server key in {settings.key_dir}: give --public-key to check the "
                "checkpoint's signature",
                err=True,
            )
            raise typer.Exit(code=2)
        public_key = keys.load_or_create(settings.key_dir).public_b64
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return audit.read_checkpoint(document, public_key)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, audit.CheckpointError) as err:
        typer.echo(f"error: {path}: {err}", err=True)
        raise typer.Exit(code=2) from err


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint file to write")],
) -> None:
    """Verify the chain, then write a signed checkpoint of its head (keep it off this server)."""
    from server import audit, keys
    from server.db import session_factory

    settings, key, engine = _open_database(create_key=False)
    with session_factory(engine, key)() as session:
        try:
            document = audit.checkpoint(session, keys.load_or_create(settings.key_dir))
        except audit.ChainBrokenError as err:
            for problem in err.problems:
                typer.echo(str(problem), err=True)
            typer.echo(f"error: {err}; no checkpoint written", err=True)
            raise typer.Exit(code=1) from err
    engine.dispose()
    out.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    content = document["content"]
    _echo(f"wrote {out}: row {content['seq']}, {content['count']} entries, {content['at']}")


@app.command("export-event")
def export_event(
    event_id: Annotated[str, typer.Argument(help="event id (UUID)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="bundle file")] = None,
) -> None:
    """Write a signed bundle of an event, its evidence and its audit entries."""
    from server import keys
    from server.bundle import BundleError, build
    from server.db import session_factory

    settings, key, engine = _open_database(create_key=True)
    with session_factory(engine, key)() as session:
        try:
            bundle = build(
                session, event_id, settings.evidence_dir, keys.load_or_create(settings.key_dir)
            )
        except BundleError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=1) from err
    engine.dispose()
    target = out or Path(f"event-{event_id}.json")
    target.write_text(json.dumps(bundle, ensure_ascii=False, indent=1), encoding="utf-8")
    _echo(f"wrote {target}")


@app.command("verify-bundle")
def verify_bundle(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    public_key: Annotated[
        str | None, typer.Option(help="trusted server public key (base64); default: the bundle's")
    ] = None,
) -> None:
    """Check an exported bundle offline: signature, evidence hashes, audit entry hashes."""
    from server.bundle import verify

    try:
        bundle = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        typer.echo(f"error: {file}: {err}", err=True)
        raise typer.Exit(code=1) from err
    problems = verify(bundle, public_key)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(code=1)
    _echo(f"bundle verifies (key {bundle.get('key_id')})")


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="supervisor, cert_office or admin")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a user (the first admin is made this way)."""
    from sqlalchemy import select

    from server import audit
    from server.db import session_factory
    from server.domain import Role
    from server.security import create_user
    from server.tables import User

    try:
        parsed = Role(role)
    except ValueError as err:
        typer.echo(f"error: unknown role {role!r}", err=True)
        raise typer.Exit(code=2) from err
    if parsed == Role.DEVICE:
        typer.echo("error: devices are registered, not created as users", err=True)
        raise typer.Exit(code=2)
    if len(password) < 8:
        typer.echo("error: password must have at least 8 characters", err=True)
        raise typer.Exit(code=2)
    _, key, engine = _open_database(create_key=True)
    with session_factory(engine, key)() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            typer.echo(f"error: user {username} exists", err=True)
            raise typer.Exit(code=1)
        create_user(session, username, password, parsed)
        audit.append(session, "cli", "user.create", f"user:{username}", {"role": role})
        session.commit()
    engine.dispose()
    _echo(f"created {role} {username}")
