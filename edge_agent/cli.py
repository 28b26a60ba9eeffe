"""`jifang edge ...`: commands for the agent that runs on a cab or at a filling station."""

from __future__ import annotations

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
