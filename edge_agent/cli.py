"""`jifang edge ...`: commands for the agent that runs on a cab or at a filling station."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Run and check the edge agent (cab or filling station).")


@app.command("validate-config")
def validate_config(
    file: Annotated[Path, typer.Argument(help="agent YAML file", dir_okay=False)],
) -> None:
    """Check an agent YAML file; print each error with its field path."""
    from edge_agent.config import CabAgentConfig, ConfigError, load_config

    try:
        config = load_config(file)
    except ConfigError as err:
        typer.echo(f"{err.source}: invalid configuration ({len(err.errors)} error(s))", err=True)
        for path, message in err.errors:
            typer.echo(f"  {path}: {message}", err=True)
        raise typer.Exit(code=1) from err
    if isinstance(config, CabAgentConfig):
        detail = f"pack {config.models.pack}/{config.models.calibration}"
    else:
        detail = f"station {config.station.station_id}"
    typer.echo(
        f"{file}: OK ({config.device.kind.value} {config.device.id} at site "
        f"{config.device.site_id}, {detail})"
    )


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent YAML file")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the cab or filling-station agent until Ctrl-C / SIGTERM; both fail closed."""
    import logging
    import signal
    import sys
    import threading

    from edge_agent.config import ConfigError, StationAgentConfig, load_config

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
    )
    try:
        cfg = load_config(config)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(code=1) from err
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    if isinstance(cfg, StationAgentConfig):
        from edge_agent.station.agent import run_station

        raise typer.Exit(code=run_station(cfg, done, sys.stdin))
    from edge_agent.cab.agent import run_cab

    raise typer.Exit(code=run_cab(cfg, done, announce=partial(typer.echo, err=True)))


# Registered as `jifang eval station-detector` by jifang.cli: it runs the station's own
# ZoneAnalyzer, so it lives with the agents rather than in calibration/.
def eval_station_detector(
    pack: Annotated[
        str, typer.Option("--pack", help="station pack name (in the model dir) or folder")
    ],
    data: Annotated[
        Path, typer.Option("--data", help="YOLO-labelled view folders (<view>/labels/*.txt)")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
    zones: Annotated[int, typer.Option(min=1, max=32, help="zone strips per frame")] = 4,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 1,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="model directory")] = None,
) -> None:
    """Box AP@0.5 and zone-presence accuracy of a station pack's cylinder detector."""
    from edge_agent.station.detector_eval import LabelError, evaluate_station_pack
    from models.errors import ModelError
    from models.store import default_model_dir

    try:
        pack_dir = Path(pack) if Path(pack).is_dir() else (model_dir or default_model_dir()) / pack
        if not pack_dir.is_dir():
            raise ModelError(f"no station pack {pack!r} (looked for {pack_dir})")
        result = evaluate_station_pack(pack_dir, data, threads=threads, zones_per_view=zones)
    except (ModelError, LabelError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    typer.echo(
        f"{result['images']} frames, {result['boxes']} boxes: box AP@0.5 "
        f"{result['box_ap50']}, zone presence accuracy {result['presence_accuracy']} "
        f"({zones} strips per frame)"
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        typer.echo(f"wrote {json_out}")
