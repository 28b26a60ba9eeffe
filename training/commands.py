"""`jifang train recognizer` and `jifang train liveness`: typer front ends of the trainers.

The integrator calls `register(app)` from training/cli.py. Every training option is
passed through to the argparse parser of the trainer (torchvision references style), so
`--help` on the parser and the command agree: `jifang train recognizer --data D --out P
--epochs 5 --lr 0.005`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}

DataOption = Annotated[Path, typer.Option("--data", help="training data folder")]
OutOption = Annotated[Path, typer.Option("--out", help="pack folder to write")]


def _run(module_name: str, data: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    import importlib

    from training.common import TrainingError

    module = importlib.import_module(module_name)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = module.get_args_parser().parse_args(["--data", str(data), "--out", str(out), *extra])
        result: dict[str, Any] = module.main(args)
    except TrainingError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    except SystemExit as err:  # argparse rejected an option: it already said which
        raise typer.Exit(code=2) from err
    return result


def recognizer(ctx: typer.Context, data: DataOption, out: OutOption) -> None:
    """Fine-tune the recognizer from a base pack on identity folders; write a new pack.

    Extra options (see `python -m training.recognizer --help`): --epochs, --lr, --head,
    --train-layers, --val-fraction, --resume, --base-pack, --aligned, ...
    """
    result = _run("training.recognizer", data, out, list(ctx.args))
    for row in [{"epoch": "before", "val": result["baseline"]}, *result["epochs"]]:
        if row["val"] is None:
            continue
        for set_name, rec in row["val"].items():
            typer.echo(
                f"epoch {row['epoch']!s:>6} {set_name:26} EER {rec['eer']:.4f} "
                f"FNMR {json.dumps(rec['fnmr_at_fmr'])}"
            )
    typer.echo(f"export check: min cosine {result['export_check']['min_cosine']:.6f}")
    typer.echo(f"wrote {result['pack']} (run folder {result['run_dir']})")


def liveness(ctx: typer.Context, data: DataOption, out: OutOption) -> None:
    """Train the live/spoof classifier on live/ and spoof*/ folders; write a pack with it.

    Extra options (see `python -m training.liveness --help`): --epochs, --lr,
    --input-size, --val-fraction, --resume, --base-pack, ...
    """
    result = _run("training.liveness", data, out, list(ctx.args))
    for row in result["epochs"]:
        typer.echo(f"epoch {row['epoch']:>3} loss {row['loss']:.4f} val {json.dumps(row['val'])}")
    typer.echo(f"export check: max diff {result['export_check']['max_abs_diff']:.2e}")
    typer.echo(f"wrote {result['pack']} (run folder {result['run_dir']})")


def register(app: typer.Typer) -> None:
    """Add the `recognizer` and `liveness` commands to the `jifang train` group."""
    app.command("recognizer", context_settings=CONTEXT)(recognizer)
    app.command("liveness", context_settings=CONTEXT)(liveness)
