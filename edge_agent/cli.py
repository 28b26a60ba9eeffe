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
) -> None:
    """Run the agent (not available yet: issue #5)."""
    typer.echo("jifang edge run: not implemented yet (issue #5).", err=True)
    raise typer.Exit(code=2)
