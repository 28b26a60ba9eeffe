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


def station_detector(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="YOLO-labelled view folders")],
    out: Annotated[str, typer.Option("--out", help="station pack name (in --model-dir) or folder")],
) -> None:
    """Train the cylinder detector on YOLO-labelled frames; write a station pack with it.

    Extra options (see `python -m training.station_detector --help`): --model-dir, --epochs,
    --threads, --lr, --input-width, --input-height, --val-fraction, --resume, --force, ...
    """
    result = _run("training.station_detector", data, Path(out), list(ctx.args))
    for row in result["epochs"]:
        typer.echo(
            f"epoch {row['epoch']:>3} loss {row['loss']:.4f} ({row['seconds']:.0f} s) "
            f"val {json.dumps(row['val'])}"
        )
    check = result["export_check"]
    typer.echo(
        f"export check: max diff {check['max_heat_diff']:.2e} heat, "
        f"{check['max_box_diff_px']:.2e} px boxes"
    )
    typer.echo(
        f"wrote {result['pack']} in {result['train_seconds']:.0f} s (run folder {result['run_dir']})"
    )


def register(app: typer.Typer) -> None:
    """Add the `recognizer`, `liveness` and `station-detector` commands to `jifang train`."""
    app.command("recognizer", context_settings=CONTEXT)(recognizer)
    app.command("liveness", context_settings=CONTEXT)(liveness)
    app.command("station-detector", context_settings=CONTEXT)(station_detector)
