"""`jifang train`: fit models on our own data (population adapters; numpy, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.commands import register

app = typer.Typer(
    help="Train models on our own data: recognizers, liveness models, population adapters.",
    no_args_is_help=True,
)


@app.command("adapter")
def adapter(
    pack: Annotated[str, typer.Option(help="base pack: name in the model directory, or folder")],
    data: Annotated[
        Path, typer.Option(help="labelled faces: <set>/<identity>/<image>, or one such set")
    ],
    out: Annotated[str, typer.Option(help="name of the new pack (written to the model dir)")],
    model_dir: Annotated[
        Path | None, typer.Option(help="model directory (default $JIFANG_MODEL_DIR)")
    ] = None,
    method: Annotated[str, typer.Option(help="center, whiten, wccn or lda")] = "wccn",
    whiten_shrinkage: Annotated[
        float, typer.Option(help="0..1, weight of the isotropic prior on total variation")
    ] = 0.8,
    shrinkage: Annotated[
        float, typer.Option(help="0..1, weight of the isotropic prior on within-class variation")
    ] = 0.7,
    output_dim: Annotated[int | None, typer.Option(help="lda: directions kept")] = None,
    min_identities: Annotated[
        int, typer.Option(help="identities with 2+ images needed (wccn, lda)")
    ] = 5,
    license_id: Annotated[
        str, typer.Option("--license", help="licence of the adapter (follows the data's terms)")
    ] = "LicenseRef-jifang-internal",
    commercial_use: Annotated[
        bool, typer.Option(help="the fitting data's terms allow commercial deployment")
    ] = False,
    mirror: Annotated[
        bool,
        typer.Option(help="also embed each chip's mirror image and average (2x embed cost)"),
    ] = False,
    select: Annotated[
        bool,
        typer.Option(
            "--select",
            help="choose both shrinkages by identity-split cross-validation on DATA itself "
            "(replaces --whiten-shrinkage and --shrinkage; needs 4+ people with 2+ photos)",
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="replace an existing pack of that name")] = False,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
) -> None:
    """Fit a linear population adapter on DATA and write base pack + adapter as pack OUT."""
    from pydantic import ValidationError

    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack
    from training.adapt import (
        AdapterConfig,
        AdapterProvenance,
        build_adapted_pack,
        embed_raw,
        fit_adapter,
        select_config,
    )

    directory = model_dir or default_model_dir()
    try:
        config = AdapterConfig(
            method=method,
            whiten_shrinkage=whiten_shrinkage,
            shrinkage=shrinkage,
            output_dim=output_dim,
            min_identities=min_identities,
        )
    except ValidationError as err:
        for e in err.errors():
            typer.echo(f"error: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", err=True)
        raise typer.Exit(code=2) from err
    try:
        base = resolve_pack(pack, directory)
        fit_set = embed_raw(base, data, threads=threads, mirror=mirror)
        if select:
            selection = select_config(fit_set.raw, fit_set.labels, config)
            typer.echo("whiten_shrinkage  shrinkage  held-out FNMR@1e-3")
            for (whiten, within), score in selection.scores.items():
                mark = (
                    " <"
                    if (whiten, within)
                    == (
                        selection.config.whiten_shrinkage,
                        selection.config.shrinkage,
                    )
                    else ""
                )
                typer.echo(f"{whiten:16.2f}  {within:9.2f}  {score:18.4f}{mark}")
            config = selection.config
        linear = fit_adapter(fit_set.raw, fit_set.labels, config)
        source = (
            f"{config.method.value} adapter (whiten shrinkage {config.whiten_shrinkage}, "
            f"within shrinkage {config.shrinkage}) fitted on {data.name}: "
            f"{linear.fit.images} images of {linear.fit.identities} identities "
            f"({linear.fit.within_identities} with several images)"
        )
        built = build_adapted_pack(
            base,
            linear,
            directory,
            out,
            AdapterProvenance(source=source, license=license_id, commercial_use=commercial_use),
            force=force,
            mirror=mirror,
        )
    except (ModelError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    from models.manifest import load_manifest

    manifest = load_manifest(built)
    typer.echo(
        f"{manifest.name}: {built} (contract {manifest.contract_id}); {source}; "
        f"{fit_set.skipped} image(s) without a face skipped"
    )


register(app)
