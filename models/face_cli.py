"""`jifang face ...`: detect, compare, enroll and identify faces with a model pack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from models.engine import Acquired, FaceEngine

app = typer.Typer(help="Detect, compare, enroll and identify faces.")

PackOption = Annotated[str, typer.Option("--pack", help="pack name (in the model dir) or folder")]
ModelDir = Annotated[Path | None, typer.Option("--model-dir", help="model directory")]


def _engine(pack: str, model_dir: Path | None) -> FaceEngine:
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack

    try:
        return FaceEngine(resolve_pack(pack, model_dir or default_model_dir()))
    except ModelError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err


def _acquire(engine: FaceEngine, path: Path) -> Acquired:
    from models.errors import ModelError
    from models.runtime.image import read_image

    try:
        acquired = engine.acquire(read_image(str(path)), whole_crop=False)
    except ModelError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    if acquired is None:
        typer.echo(f"error: {path}: no face found", err=True)
        raise typer.Exit(code=1)
    return acquired


@app.command("detect")
def detect(
    image: Annotated[Path, typer.Argument(help="image file")],
    draw: Annotated[Path | None, typer.Option("--draw", help="write an annotated PNG here")] = None,
    pack: PackOption = "jifang-open",
    model_dir: ModelDir = None,
) -> None:
    """List the faces in an image with box, score and quality; optionally draw them."""
    import cv2

    from models.errors import ModelError
    from models.runtime.image import read_image

    engine = _engine(pack, model_dir)
    try:
        picture = read_image(str(image))
    except ModelError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from err
    faces = engine.detect(picture)
    typer.echo(f"{image}: {len(faces)} face(s)")
    for i, face in enumerate(faces):
        q = engine.quality(picture, face)
        x0, y0, x1, y1 = face.detection.box
        typer.echo(
            f"  #{i} box ({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}) score "
            f"{face.detection.score:.3f}  size {q.face_px:.0f}px sharpness "
            f"{q.sharpness:.2f} yaw {q.yaw_deg:+.0f}° pitch {q.pitch_deg:+.0f}° "
            f"exposure {q.exposure:.2f}"
        )
        if draw is not None:
            cv2.rectangle(picture, (int(x0), int(y0)), (int(x1), int(y1)), (0, 200, 0), 2)
            for x, y in face.landmarks5:
                cv2.circle(picture, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1)
    if draw is not None:
        draw.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(draw), picture):
            typer.echo(f"error: cannot write {draw}", err=True)
            raise typer.Exit(code=1)
        typer.echo(f"wrote {draw}")


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="first image")],
    b: Annotated[Path, typer.Argument(help="second image")],
    pack: PackOption = "jifang-open",
    calibration: Annotated[str, typer.Option(help="named calibration to judge by")] = "default",
    model_dir: ModelDir = None,
) -> None:
    """Similarity of the largest face in each image (cosine: higher means more alike)."""
    from models.errors import ModelError
    from models.matching import calibrated_scorer

    engine = _engine(pack, model_dir)
    first, second = _acquire(engine, a), _acquire(engine, b)
    one = engine.embed(first.image, first.face)
    other = engine.embed(second.image, second.face)
    score = engine.compare(one, other)
    typer.echo(f"similarity {score:.4f}")
    cal = engine.calibration.calibrations.get(calibration)
    if cal is None:
        typer.echo(f"(no calibration {calibration!r} in the pack: no verdict)")
        return
    try:
        norm = calibrated_scorer(cal, engine.cohort).norm
    except ModelError as err:
        typer.echo(f"error: calibration {calibration!r}: {err}", err=True)
        raise typer.Exit(code=1) from err
    if norm is not None:
        # As calibrated: one face the template, the other the probe, the distractors the cohort.
        score = norm.score(one[None], other, norm.distractors)
        typer.echo(f"normalised score {score:.4f} ({cal.score.value})")
    verdict = "SAME person" if score >= cal.threshold else "DIFFERENT people"
    typer.echo(
        f"{verdict} at threshold {cal.threshold:.4f} (FMR {cal.target_fmr:g}, {calibration})"
    )


@app.command("enroll")
def enroll(
    label: Annotated[str, typer.Argument(help="operator id to store the templates under")],
    photos: Annotated[list[Path], typer.Argument(help="one or more photos of the operator")],
    gallery: Annotated[Path, typer.Option(help="local gallery file (.npz), created if missing")],
    min_face_px: Annotated[float, typer.Option(min=10)] = 60.0,
    min_sharpness: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.2,
    max_yaw: Annotated[float, typer.Option(min=0, max=90)] = 30.0,
    pack: PackOption = "jifang-open",
    model_dir: ModelDir = None,
) -> None:
    """Add quality-gated templates of one operator to a local gallery file."""
    import numpy as np

    from models.local_gallery import LocalGallery

    engine = _engine(pack, model_dir)
    store = LocalGallery.open(gallery, engine.contract_id, engine.manifest.embedding.dim)
    accepted = 0
    for photo in photos:
        acq = _acquire(engine, photo)
        q = engine.quality(acq.image, acq.face)
        problems = [
            msg
            for bad, msg in (
                (q.face_px < min_face_px, f"face {q.face_px:.0f}px < {min_face_px:.0f}px"),
                (q.sharpness < min_sharpness, f"sharpness {q.sharpness:.2f} < {min_sharpness}"),
                (abs(q.yaw_deg) > max_yaw, f"yaw {q.yaw_deg:+.0f}° beyond ±{max_yaw:.0f}°"),
            )
            if bad
        ]
        if problems:
            typer.echo(f"  rejected {photo}: {'; '.join(problems)}", err=True)
            continue
        store.add(label, engine.embed(acq.image, acq.face)[np.newaxis], str(photo))
        accepted += 1
    if not accepted:
        typer.echo(f"error: no usable photo of {label}; gallery unchanged", err=True)
        raise typer.Exit(code=1)
    store.save()
    typer.echo(
        f"enrolled {label}: {accepted} template(s); gallery {gallery} holds "
        f"{len(store.gallery)} template(s) of {len(store.gallery.labels)} operator(s)"
    )


@app.command("identify")
def identify(
    image: Annotated[Path, typer.Argument(help="probe image")],
    gallery: Annotated[Path, typer.Option(help="local gallery file made by `face enroll`")],
    top: Annotated[int, typer.Option(min=1, max=100)] = 3,
    pack: PackOption = "jifang-open",
    model_dir: ModelDir = None,
) -> None:
    """1:N search of the largest face against a local gallery file."""
    from models.local_gallery import LocalGallery

    engine = _engine(pack, model_dir)
    if not gallery.is_file():
        typer.echo(f"error: {gallery}: no such gallery", err=True)
        raise typer.Exit(code=1)
    store = LocalGallery.open(gallery, engine.contract_id, engine.manifest.embedding.dim)
    acq = _acquire(engine, image)
    result = store.gallery.search(engine.embed(acq.image, acq.face), k=top)
    for rank, match in enumerate(result.matches, 1):
        typer.echo(f"  {rank}. {match.label:24} {match.score:.4f}")
    if result.best is not None:
        typer.echo(f"margin over second: {result.margin:.4f}")
