"""`jifang demo`: the main job end to end on the embedded defaults.

Today it builds the open default pack and runs the face engine on photos that ship with
scikit-image: enrolment, a genuine check and an impostor check, each printed with its score.
The cab agent and server join the demo when they land (issue #5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Run the end-to-end demo on the embedded defaults.")


@app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="model directory")] = None,
) -> None:
    """Build the default pack if needed, then enroll and verify faces with it."""
    if ctx.invoked_subcommand is not None:
        return
    import cv2
    import numpy as np
    import skimage.data

    from models.build_default import build_default_pack
    from models.engine import FaceEngine
    from models.gallery import Gallery
    from models.store import default_model_dir

    pack = build_default_pack(model_dir or default_model_dir())
    engine = FaceEngine(pack)
    typer.echo(f"pack {engine.manifest.name} {engine.manifest.version} at {pack} "
               f"(commercial use: {'yes' if engine.manifest.commercial_use else 'NO'})")
    astronaut = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    cameraman = cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR)

    def embed(image: np.ndarray) -> np.ndarray:
        acquired = engine.acquire(image)
        if acquired is None:
            raise typer.Exit(code=1)
        return engine.embed(acquired.image, acquired.face)

    gallery = Gallery(engine.manifest.embedding.dim)
    gallery.add("operator-astronaut", embed(astronaut))
    gallery.add("operator-cameraman", embed(cameraman))
    calibrated = engine.calibration.calibrations.get("default")
    if calibrated is None:
        typer.echo("pack not calibrated: scores are shown without an accept/deny verdict "
                   "(jifang calibrate threshold sets one from a site's own photos)")
    else:
        typer.echo(f"threshold {calibrated.threshold:.4f} at FMR {calibrated.target_fmr:g} "
                   f"({calibrated.data})")
    probes = {
        "astronaut, next frame (smaller, brighter)": cv2.convertScaleAbs(
            cv2.resize(astronaut, None, fx=0.7, fy=0.7), alpha=1.0, beta=20),
        "cameraman, next frame": cv2.GaussianBlur(cameraman, (3, 3), 0),
        "empty seat": np.full((480, 640, 3), 90, np.uint8),
    }
    for label, image in probes.items():
        acquired = engine.acquire(image, whole_crop=False)
        if acquired is None:
            typer.echo(f"{label:45} -> no face (NO_FACE)")
            continue
        result = gallery.search(engine.embed(acquired.image, acquired.face))
        best = result.best
        assert best is not None
        verdict = ""
        if calibrated is not None:
            verdict = "MATCH " if best.score >= calibrated.threshold else "DENY   NO_MATCH "
        typer.echo(f"{label:45} -> {verdict}best {best.label} score {best.score:.4f} "
                   f"margin {result.margin:.4f}")
    typer.echo("The cab agent, server and review pages join this demo with issue #5.")
