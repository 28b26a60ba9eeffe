"""`jifang edge ...`: commands for the agent that runs on a cab or at a filling station."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Run and check the edge agent (cab or filling station).")


@app.command("validate-config")
def validate_config(
    file: Annotated[Path, typer.Argument(help="agent YAML file", dir_okay=False)],
) -> None:
    """Check an agent YAML file; print each error with its field path."""
    from edge_agent.config import ConfigError, load_config

    try:
        config = load_config(file)
    except ConfigError as err:
        typer.echo(f"{err.source}: invalid configuration ({len(err.errors)} error(s))", err=True)
        for path, message in err.errors:
            typer.echo(f"  {path}: {message}", err=True)
        raise typer.Exit(code=1) from err
    typer.echo(
        f"{file}: OK ({config.device.kind.value} {config.device.id} at site "
        f"{config.device.site_id}, pack {config.models.pack}/{config.models.calibration})"
    )


@app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent YAML file")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the cab or filling-station agent until Ctrl-C / SIGTERM; both fail closed."""
    import logging
    import signal
    import threading

    from edge_agent.cab.agent import Agent, build_gate
    from edge_agent.config import ConfigError, load_config
    from edge_agent.uplink import Uplink

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
    if cfg.device.kind.value == "filling_station":
        import sys

        from edge_agent.station.agent import run_station

        raise typer.Exit(code=run_station(cfg, done, sys.stdin))
    parts = build_gate(cfg)
    if parts.calibration_fault is not None:
        parts.close()
        typer.echo(f"refusing to run: {parts.calibration_fault.detail}", err=True)
        raise typer.Exit(code=3)
    uplink = Uplink(
        cfg.server.url,
        cfg.device.id,
        cfg.server.device_key.get_secret_value().encode(),
        cfg.server.timeout_s,
    )
    agent = Agent(cfg, parts, uplink)
    agent.start()
    typer.echo(
        f"cab agent {cfg.device.id} running; status at {agent.status_server.url if agent.status_server else '-'}"
    )
    done.wait()
    agent.stop()
