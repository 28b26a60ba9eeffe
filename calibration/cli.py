"""`jifang eval ...` and `jifang calibrate ...`: accuracy of packs, and thresholds from data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

eval_app = typer.Typer(help="Evaluate verification accuracy on labelled face sets.")

PackOption = Annotated[str, typer.Option("--pack", help="pack name (in the model dir) or folder")]
ModelDir = Annotated[Path | None, typer.Option("--model-dir", help="model directory")]


def _pct(value: Any) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.2f}%"
    )


def print_table(result: dict[str, Any]) -> None:
    """One row per set: acquisition, pair counts and FNMR at each supported FMR."""
    keys = ["1e-2", "1e-3", "1e-4", "1e-5"]
    typer.echo(
        f"{'set':26} {'images':>6} {'FTA':>7} {'genuine':>8} {'impostor':>9} "
        + " ".join(f"{'FNMR@' + k:>11}" for k in keys)
        + f" {'EER':>7}"
    )
    for name, row in result["sets"].items():
        typer.echo(
            f"{name:26} {row['images']:>6} {_pct(row['failure_to_acquire']):>7} "
            f"{row['genuine_pairs']:>8} {row['impostor_pairs']:>9} "
            + " ".join(f"{_pct(row['fnmr_at_fmr'].get(k)):>11}" for k in keys)
            + f" {_pct(row['eer']):>7}"
        )
        if "fmr_at_threshold" in row or "fnmr_at_threshold" in row:
            typer.echo(
                f"{'':26} at threshold {result['threshold']}: "
                f"FNMR {_pct(row.get('fnmr_at_threshold'))}, "
                f"FMR {_pct(row.get('fmr_at_threshold'))}"
            )


@eval_app.command("verify")
def verify(
    pack: PackOption,
    data: Annotated[Path, typer.Option("--data", help="one set, or a folder of sets")],
    threshold: Annotated[float | None, typer.Option(help="also report rates here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
    whole_crop: Annotated[
        bool, typer.Option(help="embed the whole crop when no face is found")
    ] = True,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    model_dir: ModelDir = None,
) -> None:
    """FNMR at fixed FMRs, per set, with genuine/impostor pairs from identity folders."""
    from calibration.evaluate import evaluate
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack

    try:
        engine = FaceEngine(resolve_pack(pack, model_dir or default_model_dir()), threads=threads)
        result = evaluate(engine, data, threshold=threshold, whole_crop=whole_crop)
    except (ModelError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    print_table(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        typer.echo(f"wrote {json_out}")
