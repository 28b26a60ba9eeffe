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


@eval_app.command("attempts")
def attempts(
    pack: PackOption,
    data: Annotated[Path, typer.Option("--data", help="one set, or a folder of sets")],
    templates: Annotated[
        int, typer.Option("--templates", min=1, max=10, help="enrolment templates per person")
    ] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
    strangers: Annotated[
        Path | None,
        typer.Option(
            "--strangers",
            help="faces of people in none of the sets (e.g. one photo per person): their "
            "false-match rate and the FNMR that holds both rates are added",
        ),
    ] = None,
    normalise: Annotated[
        bool,
        typer.Option(
            help="normalise scores against the pack's cohort when it has one (as the gate "
            "does under an as_norm calibration); --no-normalise scores raw cosines"
        ),
    ] = True,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    model_dir: ModelDir = None,
) -> None:
    """FNMR at fixed FMRs per start attempt, per set, with K rotating enrolment templates."""
    from calibration.attempts import evaluate_attempts
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack

    try:
        engine = FaceEngine(resolve_pack(pack, model_dir or default_model_dir()), threads=threads)
        result = evaluate_attempts(
            engine, data, templates, strangers=strangers, normalise=normalise
        )
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    kinds = {record["score"] for record in result["sets"].values()}
    typer.echo(f"scores: {', '.join(sorted(kinds))}")
    typer.echo(f"{'set':26} {'K':>2} {'genuine':>8} {'impostor':>9}  FNMR@1e-2  1e-3      1e-4")
    for name, record in result["sets"].items():
        rates = "  ".join(f"{_pct(record['fnmr_at_fmr'][k]):>8}" for k in ("1e-2", "1e-3", "1e-4"))
        typer.echo(
            f"{name:26} {record['templates']:>2} {record['genuine_attempts']:>8} "
            f"{record['impostor_attempts']:>9}  {rates}"
        )
        if "stranger_fmr" in record:
            fmr = "  ".join(
                f"{_pct(record['stranger_fmr'][k]):>8}" for k in ("1e-2", "1e-3", "1e-4")
            )
            both = "  ".join(
                f"{_pct(record['fnmr_at_fmr_both'][k]):>8}" for k in ("1e-2", "1e-3", "1e-4")
            )
            typer.echo(f"{'  strangers: FMR':26} {record['stranger_attempts']:>21}  {fmr}")
            typer.echo(f"{'  FNMR holding both':48}  {both}")
    if json_out is not None:
        _write_json(json_out, result)


calibrate_app = typer.Typer(
    help="Calibrate thresholds, INT8 models and camera zones.", no_args_is_help=True
)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=1)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    typer.echo(f"wrote {path}")


@calibrate_app.command("threshold")
def threshold(
    pack: PackOption,
    data: Annotated[Path, typer.Option("--data", help="one set, or a folder of sets")],
    target_fmr: Annotated[
        float, typer.Option("--target-fmr", min=1e-9, max=0.5, help="FMR to calibrate at")
    ] = 1e-3,
    name: Annotated[
        str | None,
        typer.Option(help="calibration name (population or site); default: the set's name"),
    ] = None,
    only_set: Annotated[
        str | None, typer.Option("--set", help="only this set of a folder of sets")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the summary here")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="write report.md and PNGs into this folder")
    ] = None,
    write: Annotated[
        bool, typer.Option(help="write the thresholds into the pack's calibration block")
    ] = True,
    ci_level: Annotated[float, typer.Option(min=0.51, max=0.999)] = 0.95,
    bootstrap: Annotated[
        int, typer.Option(min=0, max=10_000, help="identity-bootstrap replicates")
    ] = 200,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    whole_crop: Annotated[
        bool, typer.Option(help="embed the whole crop when no face is found")
    ] = True,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    model_dir: ModelDir = None,
) -> None:
    """Thresholds at fixed FMRs per set, with intervals; writes the target one into the pack."""
    from calibration.datasets import embed_set, find_sets
    from calibration.metrics import fmr_key
    from calibration.threshold import (
        CalibrationDataError,
        ThresholdSettings,
        calibration_record,
        set_thresholds,
        summary_json,
    )
    from contract.codes import ScoreKind
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.manifest import CALIBRATION_NAME_PATTERN, put_calibrations
    from models.store import default_model_dir, resolve_pack

    try:
        settings = ThresholdSettings(
            target_fmr=target_fmr, ci_level=ci_level, bootstrap_replicates=bootstrap, seed=seed
        )
        sets = find_sets(data)
        if only_set is not None:
            sets = [s for s in sets if s.name == only_set]
            if not sets:
                raise CalibrationDataError(f"{data}: no set named {only_set!r}")
        if name is not None and len(sets) > 1:
            raise CalibrationDataError(
                f"--name needs one set, {data} holds {len(sets)}: pick one with --set"
            )
        names = {s.name: name or s.name for s in sets}
        for cal_name in names.values():
            if not CALIBRATION_NAME_PATTERN.fullmatch(cal_name):
                raise CalibrationDataError(
                    f"calibration name {cal_name!r} must match {CALIBRATION_NAME_PATTERN.pattern}"
                )
        pack_dir = resolve_pack(pack, model_dir or default_model_dir())
        engine = FaceEngine(pack_dir, threads=threads)
        results = [
            set_thresholds(
                embed_set(engine, s, whole_crop=whole_crop), s.root, settings, engine.cohort
            )
            for s in sets
        ]
    except (ModelError, ValueError) as err:
        raise _fail(err) from err

    key = fmr_key(target_fmr)
    for r in results:
        typer.echo(
            f"{r.name}: {r.images} images, {r.identities} identities, "
            f"{r.genuine_pairs} genuine / {r.impostor_pairs} impostor pairs"
        )
        if r.score != ScoreKind.COSINE:
            typer.echo(
                f"  scores: {r.score.value} against the pack's cohort ({r.cohort_excluded} "
                "cohort face(s) of the set's own people left out)"
            )
        for k, p in r.points.items():
            fnmr = "—" if p.fnmr is None else f"{100 * p.fnmr:.2f}%"
            ci = (
                ""
                if p.fnmr_ci is None
                else (f" (CP {100 * p.fnmr_ci[0]:.2f}–{100 * p.fnmr_ci[1]:.2f}%)")
            )
            typer.echo(f"  FMR {k:>5}: threshold {p.threshold:.4f}, FNMR {fnmr}{ci}")
        for k, needed in r.unsupported.items():
            typer.echo(
                f"  FMR {k:>5}: not claimed ({r.impostor_pairs} impostor pairs, needs {needed})"
            )
    if json_out is not None:
        _write_json(json_out, summary_json(results))
    if report is not None:
        from calibration.report import write_report

        typer.echo(
            f"wrote {write_report(results, report, engine.manifest.name, engine.contract_id)}"
        )
    if not write:
        return
    refused = [r for r in results if r.target is None]
    if refused:
        for r in refused:
            typer.echo(
                f"error: set {r.name}: {r.impostor_pairs} impostor pairs cannot support FMR "
                f"{key} (needs {r.unsupported[key]}); nothing written to the pack",
                err=True,
            )
        raise typer.Exit(code=1)
    try:
        block = put_calibrations(
            pack_dir,
            {names[r.name]: calibration_record(r, engine.contract_id) for r in results},
            engine.manifest,
        )
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    for r in results:
        cal = block.calibrations[names[r.name]]
        typer.echo(
            f"calibration {names[r.name]}: threshold {cal.threshold:.4f} at FMR {key} "
            f"written to {pack_dir} (revision {block.revision})"
        )


@calibrate_app.command("identification")
def identification(
    pack: PackOption,
    data: Annotated[
        Path, typer.Option("--data", help="the site's people: one set, or a folder of sets")
    ],
    strangers: Annotated[
        Path,
        typer.Option(
            "--strangers",
            help="faces of people in none of DATA's sets (one per person): gallery fillers "
            "up to --operators, the rest non-mated searches",
        ),
    ],
    name: Annotated[str, typer.Option(help="the calibration to measure at and write into")],
    operators: Annotated[
        int, typer.Option(min=2, max=100_000, help="operators in the measured gallery")
    ] = 200,
    min_margin: Annotated[
        float | None,
        typer.Option(help="the 1:N rule's margin (default: the gate's gate.min_margin)"),
    ] = None,
    write: Annotated[bool, typer.Option(help="write the result into the calibration")] = True,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    model_dir: ModelDir = None,
) -> None:
    """FPIR and FNIR of 1:N search at a calibration's threshold (the gate's 1:N bound)."""
    from calibration.identification import calibrate_identification
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.manifest import put_calibration
    from models.matching import DEFAULT_MIN_MARGIN, calibrated_scorer
    from models.store import default_model_dir, resolve_pack

    margin = DEFAULT_MIN_MARGIN if min_margin is None else min_margin
    try:
        pack_dir = resolve_pack(pack, model_dir or default_model_dir())
        engine = FaceEngine(pack_dir, threads=threads)
        calibration = engine.calibration.calibrations.get(name)
        if calibration is None:
            known = ", ".join(sorted(engine.calibration.calibrations)) or "none"
            raise ValueError(
                f"the pack has no calibration {name!r} (has: {known}); run jifang calibrate "
                "threshold first"
            )
        scorer = calibrated_scorer(calibration, engine.cohort)
        point = calibrate_identification(
            engine, calibration, scorer, data, strangers, operators, margin
        )
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(
        f"gallery of {point.operators} operators ({point.templates} templates), "
        f"{calibration.score.value} threshold {calibration.threshold:.4f}, margin "
        f"{point.min_margin}"
    )
    typer.echo(
        f"FPIR {_pct(point.fpir)} ({point.false_positives} of {point.non_mated_searches} "
        f"non-mated searches; 95% upper bound {_pct(point.fpir_upper)}), FNIR "
        f"{_pct(point.fnir)} of {point.mated_searches} mated searches"
    )
    if not write:
        return
    try:
        block = put_calibration(
            pack_dir,
            name,
            calibration.model_copy(update={"identification": point}),
            engine.manifest,
        )
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(f"written into calibration {name} (revision {block.revision})")


@calibrate_app.command("quantize")
def quantize(
    pack: PackOption,
    data: Annotated[Path, typer.Option("--data", help="one set, or a folder of sets")],
    only_sets: Annotated[
        list[str] | None, typer.Option("--set", help="only these sets (repeatable)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="INT8 pack folder; default <pack>-int8 beside it")
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(help="named calibration whose FMR to judge at (default: --target-fmr)"),
    ] = None,
    target_fmr: Annotated[float, typer.Option("--target-fmr", min=1e-9, max=0.5)] = 1e-3,
    max_fnmr_rise: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="refuse when FNMR rises more than this on any set"),
    ] = 0.01,
    calibration_chips: Annotated[int, typer.Option(min=1, max=10_000)] = 200,
    method: Annotated[str, typer.Option(help="minmax, entropy or percentile")] = "minmax",
    reduce_range: Annotated[
        bool,
        typer.Option(
            help="7-bit weights: needed on x86 CPUs without VNNI; --no-reduce-range only when "
            "every device has VNNI (or is ARM)"
        ),
    ] = True,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    timing_runs: Annotated[int, typer.Option(min=10, max=100_000)] = 300,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing INT8 pack")] = False,
    model_dir: ModelDir = None,
) -> None:
    """Statically quantize the recognizer to INT8; write the pack only if accuracy holds."""
    from pydantic import ValidationError

    from calibration.quantize import QuantizeSettings, load_chip_sets, quantize_pack, result_json
    from models.engine import FaceEngine
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack

    try:
        pack_dir = resolve_pack(pack, model_dir or default_model_dir())
        engine = FaceEngine(pack_dir, threads=threads)
        if calibration is not None:
            named = engine.calibration.calibrations.get(calibration)
            if named is None:
                raise ModelError(f"{pack_dir.name}: no calibration named {calibration!r}")
            target_fmr = named.target_fmr
        settings = QuantizeSettings(
            calibration_chips=calibration_chips,
            method=method,  # validated by pydantic (minmax, entropy or percentile)
            reduce_range=reduce_range,
            max_fnmr_rise=max_fnmr_rise,
            target_fmr=target_fmr,
            threads=threads,
            timing_runs=timing_runs,
        )
        sets = load_chip_sets(engine, data, only_sets)
        result = quantize_pack(
            engine,
            sets,
            out or pack_dir.parent / f"{pack_dir.name}-int8",
            settings,
            data_note=str(data),
            force=force,
        )
    except ValidationError as err:
        raise _fail(ValueError(str(err))) from err
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(
        f"ms per face ({threads} thread(s), {result.fp32_timing.basis} of {timing_runs} runs): "
        f"fp32 {result.fp32_ms_per_face:.3f}, int8 {result.int8_ms_per_face:.3f} "
        f"(speed-up {result.speedup:.2f}x); fastest wall run: fp32 "
        f"{result.fp32_timing.wall_min:.3f}, int8 {result.int8_timing.wall_min:.3f}"
    )
    typer.echo(
        f"embedding cosine to fp32: mean {result.cosine_mean:.5f}, min {result.cosine_min:.5f}"
    )
    for s in result.sets:
        if s.fnmr_delta is None:
            typer.echo(f"  {s.name}: FNMR not measurable at FMR {target_fmr:g}")
        else:
            typer.echo(
                f"  {s.name}: FNMR at FMR {target_fmr:g}: fp32 {100 * (s.fnmr_fp32 or 0):.2f}%, "
                f"int8 {100 * (s.fnmr_int8 or 0):.2f}% ({100 * s.fnmr_delta:+.2f} points)"
            )
    if json_out is not None:
        _write_json(json_out, result_json(result))
    if result.refused:
        typer.echo(f"error: {result.refused}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"wrote INT8 pack {result.pack}")


@calibrate_app.command("zones")
def zones(
    camera: Annotated[
        str, typer.Option(help="camera index, rtsp:// URL, video file or still image")
    ],
    out: Annotated[Path, typer.Option("--out", help="zone file to write (YAML)")],
    zone: Annotated[
        list[str] | None,
        typer.Option("--zone", help="NAME:x,y;x,y;x,y (repeatable); no window is opened"),
    ] = None,
    polygons: Annotated[
        Path | None, typer.Option(help="YAML/JSON list of {name, polygon}; no window")
    ] = None,
    names: Annotated[
        list[str] | None, typer.Option("--name", help="names for zones drawn in the window")
    ] = None,
    max_shift_px: Annotated[
        float, typer.Option(min=0.1, max=500.0, help="drift limit stored in the file")
    ] = 6.0,
) -> None:
    """Take a reference frame and define zones on it; writes YAML, reference PNG, overlay PNG."""
    import cv2

    from calibration.zones import (
        DriftSettings,
        ZoneError,
        draw_zones_interactive,
        grab_frame,
        has_display,
        load_polygons,
        make_zone_file,
        parse_zone_arg,
        render_overlay,
        save_zones,
    )

    try:
        frame = grab_frame(camera)
        given = [parse_zone_arg(z) for z in zone or []]
        if polygons is not None:
            given += load_polygons(polygons)
        if not given:
            if not has_display():
                raise ZoneError(
                    "no display for the drawing window: give zones with --zone or --polygons"
                )
            given = draw_zones_interactive(frame, names or [])
        if not given:
            raise ZoneError("no zones drawn; nothing written")
        reference = out.with_name(f"{out.stem}.reference.png")
        zone_file = make_zone_file(
            camera, frame, reference.name, given, DriftSettings(max_shift_px=max_shift_px)
        )
    except ValueError as err:
        raise _fail(err) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay = out.with_name(f"{out.stem}.overlay.png")
    if not cv2.imwrite(str(reference), frame) or not cv2.imwrite(
        str(overlay), render_overlay(frame, zone_file.zones)
    ):
        raise _fail(OSError(f"cannot write images beside {out}"))
    save_zones(out, zone_file)
    typer.echo(
        f"wrote {out} ({len(zone_file.zones)} zone(s) on a "
        f"{zone_file.frame_width}x{zone_file.frame_height} frame), {reference.name}, "
        f"{overlay.name}"
    )


@calibrate_app.command("check-drift")
def check_drift_cmd(
    zones_file: Annotated[Path, typer.Option("--zones", help="zone file from `zones`")],
    camera: Annotated[
        str | None, typer.Option(help="take the current frame here (default: the file's camera)")
    ] = None,
    overlay: Annotated[
        Path | None, typer.Option(help="write the current frame with the zones here")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result here")] = None,
) -> None:
    """Has the camera moved since the reference frame? Exit 0 ok, 3 moved, 4 unverifiable."""
    import cv2
    import numpy as np

    from calibration.zones import (
        DriftStatus,
        ZoneError,
        check_drift,
        grab_frame,
        load_zones,
        render_drift,
    )

    try:
        zone_file = load_zones(zones_file)
        reference_path = zones_file.parent / zone_file.reference_frame
        loaded = cv2.imread(str(reference_path), cv2.IMREAD_COLOR)
        if loaded is None:
            raise ZoneError(f"{reference_path}: reference frame missing or unreadable")
        reference = np.asarray(loaded, np.uint8)
        current = grab_frame(camera or zone_file.camera)
    except ValueError as err:
        raise _fail(err) from err
    result = check_drift(reference, current, zone_file.zones, zone_file.drift)
    typer.echo(
        f"{result.status.value}: {result.reason} "
        f"({result.matches} matches, {result.inliers} inliers)"
    )
    if overlay is not None:
        cv2.imwrite(str(overlay), render_drift(current, zone_file.zones, result))
    if json_out is not None:
        _write_json(
            json_out,
            {
                "status": result.status.value,
                "shift_px": result.shift_px,
                "matches": result.matches,
                "inliers": result.inliers,
                "reason": result.reason,
            },
        )
    codes = {DriftStatus.OK: 0, DriftStatus.MOVED: 3, DriftStatus.UNVERIFIABLE: 4}
    if codes[result.status]:
        raise typer.Exit(code=codes[result.status])


@calibrate_app.command("liveness")
def calibrate_liveness(
    pack: PackOption,
    data: Annotated[
        Path, typer.Option("--data", help="folder with live/, spoof_print/, spoof_replay/")
    ],
    max_apcer: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="APCER allowed per attack type at the live band"),
    ] = 0.05,
    max_bpcer: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="bona fide allowed below the spoof band (refused unasked)"
        ),
    ] = 0.02,
    name: Annotated[
        str, typer.Option(help="PAD calibration name (liveness.passive.calibration)")
    ] = "pad",
    write: Annotated[
        bool, typer.Option(help="write the bands into the pack's calibration block")
    ] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 1,
    model_dir: ModelDir = None,
) -> None:
    """The passive PAD's live and spoof bands from a site's live and attack presentations."""
    from calibration.liveness_calibrate import choose_bands, pad_calibration
    from calibration.liveness_eval import score_folder
    from models.errors import ModelError
    from models.manifest import put_pad_calibration
    from models.store import default_model_dir, resolve_pack

    try:
        pack_dir = resolve_pack(pack, model_dir or default_model_dir())
        scored = score_folder(pack_dir, data, threads=threads)
        bands = choose_bands(scored.items, max_apcer, max_bpcer)
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    doc = bands.document
    counts = doc["counts"]
    for warning in bands.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(
        f"live band {bands.live_threshold:.4f}: BPCER {_pct(doc['bpcer'])} of {counts['live']} "
        f"live (challenged or refused); APCER print {_pct(doc['apcer']['print'])} of "
        f"{counts['spoof_print']}, replay {_pct(doc['apcer']['replay'])} of "
        f"{counts['spoof_replay']}"
    )
    typer.echo(
        f"spoof band {bands.spoof_threshold:.4f}: {_pct(doc['bpcer_refused'])} of live refused "
        f"without a challenge, {_pct(doc['bona_fide_challenge_rate'])} challenged"
    )
    if json_out is not None:
        _write_json(json_out, doc)
    if not write:
        return
    try:
        block = put_pad_calibration(pack_dir, name, pad_calibration(bands, scored, data))
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    typer.echo(
        f"PAD calibration {name!r} written to {pack_dir} (revision {block.revision}); the "
        f"agent uses it while liveness.passive.calibration is {name!r} and the config sets no "
        "threshold"
    )


@eval_app.command("liveness")
def liveness(
    pack: PackOption,
    data: Annotated[
        Path, typer.Option("--data", help="folder with live/, spoof_print/, spoof_replay/")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="live probability to accept [the pack's own]"),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 1,
    model_dir: ModelDir = None,
) -> None:
    """BPCER and APCER per attack type of the pack's passive PAD (one file = one presentation)."""
    from calibration.liveness_eval import evaluate_liveness
    from models.errors import ModelError
    from models.store import default_model_dir, resolve_pack

    try:
        pack_dir = resolve_pack(pack, model_dir or default_model_dir())
        result = evaluate_liveness(pack_dir, data, threshold=threshold, threads=threads)
    except (ModelError, ValueError) as err:
        raise _fail(err) from err
    counts = result["counts"]
    typer.echo(
        f"threshold {result['threshold']:.3f}: BPCER {_pct(result['bpcer'])} of "
        f"{counts['live']} live; APCER print {_pct(result['apcer']['print'])} of "
        f"{counts['spoof_print']}, replay {_pct(result['apcer']['replay'])} of "
        f"{counts['spoof_replay']}"
    )
    if json_out is not None:
        _write_json(json_out, result)
