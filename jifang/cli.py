"""The `jifang` command: one entry point whose groups live in the packages they drive.

Each group module imports only typer at import time and loads heavy libraries inside its
commands, so `jifang --help` is fast and the edge commands never pull in torch.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from calibration.cli import calibrate_app, eval_app
from edge_agent.cli import app as edge_app
from edge_agent.cli import eval_station_detector
from jifang.demo import app as demo_app
from models.cli import app as models_app
from models.face_cli import app as face_app
from server.cli import app as server_app
from training.cli import app as train_app
from training.cli import import_pad

app = typer.Typer(
    name="jifang",
    help="技防 jifang: face-verified start-up, scan-to-fill monitoring, review and audit.",
    no_args_is_help=True,
    add_completion=False,
)


app.add_typer(server_app, name="server")
app.add_typer(edge_app, name="edge")
# import-pad converts with torch, so it lives with the trainers; it is a `models` verb for users.
models_app.command("import-pad")(import_pad)
app.add_typer(models_app, name="models")
app.add_typer(face_app, name="face")
eval_app.command("station-detector")(eval_station_detector)
app.add_typer(eval_app, name="eval")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(train_app, name="train")
app.add_typer(demo_app, name="demo")


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log debug messages")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console-script entry point."""
    app()
