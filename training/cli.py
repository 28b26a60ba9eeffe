"""`jifang train`: fit models on our own data (population adapters; numpy, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from training.commands import register

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from training.adapt import AdapterConfig

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
        float | None,
        typer.Option(help="0..1, weight of the isotropic prior on total variation [selected]"),
    ] = None,
    shrinkage: Annotated[
        float | None,
        typer.Option(
            help="0..1, weight of the isotropic prior on within-class variation [selected]"
        ),
    ] = None,
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
            help="wccn without explicit shrinkages: choose both by identity-split "
            "cross-validation on DATA itself (needs 4+ people with 2+ photos; with fewer, the "
            "built-in values are used and the command says so)",
        ),
    ] = True,
    cohort: Annotated[
        bool,
        typer.Option(
            help="also store one face per person of DATA as the cohort of score "
            "normalisation (needs 50+ people; `jifang calibrate threshold` then calibrates "
            "normalised scores)",
        ),
    ] = True,
    force: Annotated[bool, typer.Option(help="replace an existing pack of that name")] = False,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
) -> None:
    """Fit a linear population adapter on DATA and write base pack + adapter as pack OUT."""
    from pydantic import ValidationError

    from models.errors import ModelError
    from models.matching import MIN_DISTRACTORS
    from models.store import default_model_dir, resolve_pack
    from training.adapt import (
        AdapterConfig,
        AdapterMethod,
        AdapterProvenance,
        build_adapted_pack,
        cohort_rows,
        embed_raw,
        fit_adapter,
    )

    directory = model_dir or default_model_dir()
    try:
        given = {
            key: value
            for key, value in (("whiten_shrinkage", whiten_shrinkage), ("shrinkage", shrinkage))
            if value is not None
        }
        config = AdapterConfig(
            method=method, output_dim=output_dim, min_identities=min_identities, **given
        )
    except ValidationError as err:
        for e in err.errors():
            typer.echo(f"error: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", err=True)
        raise typer.Exit(code=2) from err
    try:
        base = resolve_pack(pack, directory)
        fit_set = embed_raw(base, data, threads=threads, mirror=mirror)
        if select and not given and config.method == AdapterMethod.WCCN:
            config = _selected(fit_set.raw, fit_set.labels, config)
        linear = fit_adapter(fit_set.raw, fit_set.labels, config)
        rows = cohort_rows(fit_set, linear) if cohort else None
        if cohort and rows is None:
            typer.echo(
                f"note: {len(set(fit_set.labels))} people in {data} are too few for a cohort "
                f"(needs {MIN_DISTRACTORS}); the pack scores raw cosines"
            )
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
            cohort=rows,
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
    if rows is not None:
        typer.echo(
            f"cohort: one face of each of {len(rows.identities)} people; calibrate the pack "
            "(jifang calibrate threshold) to use normalised scores at the gate"
        )


def _selected(
    raw: npt.NDArray[np.float32], labels: list[str], config: AdapterConfig
) -> AdapterConfig:
    """`config` with the shrinkages chosen on the data, or unchanged when it is too small."""
    from training.adapt import SelectionError, select_config

    try:
        selection = select_config(raw, labels, config)
    except SelectionError as err:
        typer.echo(
            f"note: {err}; using whiten shrinkage {config.whiten_shrinkage} and within "
            f"shrinkage {config.shrinkage}"
        )
        return config
    chosen = (selection.config.whiten_shrinkage, selection.config.shrinkage)
    typer.echo("whiten_shrinkage  shrinkage  held-out FNMR@1e-3")
    for (whiten, within), score in selection.scores.items():
        mark = " <" if (whiten, within) == chosen else ""
        typer.echo(f"{whiten:16.2f}  {within:9.2f}  {score:18.4f}{mark}")
    return selection.config


register(app)


def import_pad(
    pack: Annotated[str, typer.Option(help="base pack: name in the model directory, or folder")],
    weights: Annotated[
        Path,
        typer.Option(
            help="folder with 2.7_80x80_MiniFASNetV2.pth and 4_0_0_80x80_MiniFASNetV1SE.pth"
        ),
    ],
    out: Annotated[str, typer.Option(help="name of the new pack (written to the model dir)")],
    model_dir: Annotated[
        Path | None, typer.Option(help="model directory (default $JIFANG_MODEL_DIR)")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace an existing pack")] = False,
) -> None:
    """Add user-supplied MiniFASNet PAD weights to a copy of a pack (torch needed here only)."""
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack
    from training.common import TrainingError
    from training.pad_import import import_pad as run_import

    root = model_dir or default_model_dir()
    try:
        base = resolve_pack(pack, root)
        result = run_import(base, weights, root / out, force=force)
    except (ModelError, TrainingError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    typer.echo(
        f"wrote {result.pack_dir} ({result.file}; ONNX vs torch max |diff| "
        f"{result.max_abs_diff:.1e} on {result.checked_crops} crops)"
    )
