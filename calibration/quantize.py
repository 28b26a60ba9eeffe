"""Static INT8 quantization of a pack's recognizer, gated on accuracy measured in the same run.

The onnxruntime quantizer sets activation ranges from face chips of the calibration data
(a seeded sample). The same run times fp32 and INT8 on this machine (interleaved, median,
same thread count), compares embeddings (cosine to fp32) and FNMR at the calibrated FMR per
set with the threshold arithmetic of `calibration.threshold`. The INT8 pack is written only
when no set's FNMR rises more than the stated limit. The range-calibration chips come from
the evaluated sets: ranges are per-tensor statistics, not fitted to identities, so the
overlap is small, but it is there.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from calibration.datasets import ChipSet, EmbeddedSet, chip_set, embed_chip_set
from calibration.metrics import fmr_key
from calibration.threshold import (
    SetThresholds,
    ThresholdSettings,
    calibration_record,
    set_thresholds,
)
from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import (
    CalibrationBlock,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    verify_pack,
    write_calibration,
    write_manifest,
)
from models.runtime.dlib_recognizer import INPUT_NAME, DlibResNetRecognizer
from models.store import pack_manifest
from models.types import Task
from models.vectors import l2_normalize

logger = logging.getLogger(__name__)

SUPPORTED_WRAPPERS = {"dlib_resnet"}
"""Recognizers whose preprocessing (uint8 RGB chip -> float NCHW 0..255) this reader knows."""
INT8_FILE = "recognizer_int8.onnx"


class QuantizeSettings(BaseModel):
    """How the recognizer is quantized, timed and judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_chips: int = Field(
        default=200, ge=1, le=10_000, description="chips fed to the range calibration"
    )
    method: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="how activation ranges are set from the chips"
    )
    per_channel: bool = Field(default=True, description="one weight scale per output channel")
    # On by default: the pack runs on edge CPUs unknown when it is made, and on x86 CPUs
    # without VNNI (AVX2 only) full 8-bit U8S8 products saturate. Measured on an AVX2-only
    # AMD EPYC: cosine to fp32 0.966-0.990 without it, >= 0.999 with it.
    reduce_range: bool = Field(
        default=True,
        description="7-bit weights: avoids U8S8 saturation on x86 CPUs without VNNI; turn off "
        "only when every device that runs the pack has VNNI (or is ARM)",
    )
    max_fnmr_rise: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="largest allowed absolute FNMR rise at the calibrated FMR, on any set",
    )
    target_fmr: float = Field(default=1e-3, gt=0.0, lt=1.0, description="the calibrated FMR")
    threads: int = Field(default=2, ge=1, le=64, description="intra-op threads, both models")
    timing_runs: int = Field(default=300, ge=10, le=100_000, description="timed runs per model")
    warmup_runs: int = Field(default=20, ge=1, le=10_000, description="untimed runs first")
    seed: int = Field(default=0, ge=0, description="seed for the calibration-chip sample")


@dataclass(frozen=True)
class SetComparison:
    """fp32 against INT8 on one set."""

    name: str
    genuine_pairs: int
    impostor_pairs: int
    fnmr_fp32: float | None
    fnmr_int8: float | None
    threshold_fp32: float | None
    threshold_int8: float | None

    @property
    def fnmr_delta(self) -> float | None:
        """INT8 FNMR minus fp32 FNMR at the calibrated FMR (None when not measurable)."""
        if self.fnmr_fp32 is None or self.fnmr_int8 is None:
            return None
        return self.fnmr_int8 - self.fnmr_fp32


@dataclass
class QuantizeResult:
    """Everything one quantization run measured, and where the pack went."""

    fp32_timing: Timing
    int8_timing: Timing
    cosine_mean: float
    cosine_min: float
    sets: list[SetComparison]
    settings: QuantizeSettings
    calibration_chips: int
    fp32_bytes: int
    int8_bytes: int
    pack: Path | None = None
    refused: str | None = None
    int8_thresholds: list[SetThresholds] = field(default_factory=list)

    @property
    def fp32_ms_per_face(self) -> float:
        """fp32 ms per face (see `Timing.ms_per_face`)."""
        return self.fp32_timing.ms_per_face

    @property
    def int8_ms_per_face(self) -> float:
        """INT8 ms per face (see `Timing.ms_per_face`)."""
        return self.int8_timing.ms_per_face

    @property
    def speedup(self) -> float:
        """fp32 time over INT8 time."""
        return self.fp32_ms_per_face / self.int8_ms_per_face

    @property
    def fnmr_delta(self) -> float | None:
        """The largest FNMR rise over the measurable sets (the figure the gate judges)."""
        deltas = [s.fnmr_delta for s in self.sets if s.fnmr_delta is not None]
        return max(deltas) if deltas else None

    def summary(self) -> dict[str, float | None]:
        """The bench result: exactly the keys the issue fixes (fnmr_delta None if unmeasured)."""
        delta = self.fnmr_delta
        return {
            "fp32_ms_per_face": round(self.fp32_ms_per_face, 4),
            "int8_ms_per_face": round(self.int8_ms_per_face, 4),
            "speedup": round(self.speedup, 3),
            "fnmr_delta": None if delta is None else round(delta, 6),
        }


class QuantizationRefused(ModelError):
    """The INT8 model lost more accuracy than allowed; no pack was written."""


class ChipReader:
    """onnxruntime CalibrationDataReader over face chips, one chip per call."""

    def __init__(self, chips: npt.NDArray[np.uint8]) -> None:
        self._chips = chips
        self._iter: Iterator[dict[str, npt.NDArray[np.float32]]] = self._batches()

    def _batches(self) -> Iterator[dict[str, npt.NDArray[np.float32]]]:
        for chip in self._chips:
            # Same preprocessing as DlibResNetRecognizer.embed_chips: NCHW float 0..255.
            yield {INPUT_NAME: np.ascontiguousarray(chip[None].transpose(0, 3, 1, 2), np.float32)}

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        """The next calibration input, or None when done."""
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first chip."""
        self._iter = self._batches()


def sample_chips(sets: list[ChipSet], count: int, seed: int) -> npt.NDArray[np.uint8]:
    """A seeded sample of up to `count` chips drawn from all sets."""
    every = np.concatenate([s.chips for s in sets if len(s.chips)])
    if len(every) == 0:
        raise ModelError("no face chips to calibrate the quantizer with")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(every), size=min(count, len(every)), replace=False)
    return every[np.sort(picked)]


def quantize_model(
    source: Path, target: Path, chips: npt.NDArray[np.uint8], settings: QuantizeSettings
) -> None:
    """Write a statically quantized (QDQ, U8 activations, S8 weights) copy of `source`."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory(prefix="jifang-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        # Folds the affine (Mul/Add) layers into the convolutions so they quantize as one op.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            ChipReader(chips),
            # QDQ with U8 activations runs on onnxruntime's integer kernels on x86 and ARM;
            # S8 activations fell back to float kernels on this CPU (no speed-up).
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            calibrate_method=methods[settings.method],
        )


@dataclass(frozen=True)
class Timing:
    """ms per face (batch of one) of one model over the timed runs."""

    wall_median: float
    wall_min: float
    cpu_median: float
    """Process CPU time per run: with one intra-op thread, the face's own compute cost."""
    threads: int

    @property
    def ms_per_face(self) -> float:
        """CPU time with one thread (immune to other processes' load), else wall median."""
        return self.cpu_median if self.threads == 1 else self.wall_median

    @property
    def basis(self) -> str:
        """Which figure `ms_per_face` is."""
        return "median process CPU time" if self.threads == 1 else "median wall time"


def time_models(
    fp32: DlibResNetRecognizer,
    int8: DlibResNetRecognizer,
    chips: npt.NDArray[np.uint8],
    settings: QuantizeSettings,
) -> tuple[Timing, Timing]:
    """Time both models on the same chips, runs interleaved, same thread count.

    Interleaving puts both under the same background load. On a shared machine wall time
    still grows with the length of a run (a longer run is preempted more often), so with
    one thread the CPU time of the process is the figure used: it is what the face costs.
    """
    for i in range(settings.warmup_runs):
        chip = chips[i % len(chips)][None]
        fp32.embed_chips(chip)
        int8.embed_chips(chip)
    wall: dict[str, list[float]] = {"fp32": [], "int8": []}
    cpu: dict[str, list[float]] = {"fp32": [], "int8": []}
    for i in range(settings.timing_runs):
        chip = chips[i % len(chips)][None]
        order = (("fp32", fp32), ("int8", int8)) if i % 2 == 0 else (("int8", int8), ("fp32", fp32))
        for name, model in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            model.embed_chips(chip)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    def timing(name: str) -> Timing:
        return Timing(
            wall_median=1000.0 * float(np.median(wall[name])),
            wall_min=1000.0 * float(np.min(wall[name])),
            cpu_median=1000.0 * float(np.median(cpu[name])),
            threads=settings.threads,
        )

    return timing("fp32"), timing("int8")


def compare_set(
    fp32: EmbeddedSet, int8: EmbeddedSet, root: Path, th: ThresholdSettings
) -> tuple[SetComparison, SetThresholds | None]:
    """FNMR of both models at the calibrated FMR, each at its own threshold for that FMR."""
    a = set_thresholds(fp32, root, th)
    b = set_thresholds(int8, root, th)
    pa, pb = a.target, b.target
    comparison = SetComparison(
        name=fp32.name,
        genuine_pairs=a.genuine_pairs,
        impostor_pairs=a.impostor_pairs,
        fnmr_fp32=pa.fnmr if pa else None,
        fnmr_int8=pb.fnmr if pb else None,
        threshold_fp32=pa.threshold if pa else None,
        threshold_int8=pb.threshold if pb else None,
    )
    return comparison, b if pb is not None else None


def fnmr_gate(sets: list[SetComparison], limit: float) -> float:
    """The worst FNMR rise; raises QuantizationRefused past `limit` or when none is measurable."""
    measured = [s for s in sets if s.fnmr_delta is not None]
    if not measured:
        raise QuantizationRefused(
            "no set has both genuine pairs and enough impostor pairs for the calibrated FMR: "
            "the accuracy change cannot be measured, so no INT8 pack is written"
        )
    worst = max(measured, key=lambda s: s.fnmr_delta or 0.0)
    rise = worst.fnmr_delta or 0.0
    if rise > limit:
        raise QuantizationRefused(
            f"INT8 FNMR on set {worst.name} rises {100 * rise:.2f} points "
            f"({100 * (worst.fnmr_fp32 or 0):.2f}% -> {100 * (worst.fnmr_int8 or 0):.2f}%), "
            f"more than the limit {100 * limit:.2f}; no INT8 pack written"
        )
    return rise


def int8_manifest(
    manifest: PackManifest, entry: FileEntry, int8_path: Path, note: str
) -> PackManifest:
    """The INT8 pack's manifest: the new recognizer file and, with it, a new contract id."""
    new_entry = entry.model_copy(
        update={
            "path": INT8_FILE,
            "sha256": sha256_file(int8_path),
            "source": f"{manifest.name} {manifest.version} {entry.path} "
            f"(sha256 {entry.sha256[:16]}), {note}",
        }
    )
    files = tuple(new_entry if f is entry else f for f in manifest.files)
    return PackManifest(
        name=f"{manifest.name}-int8",
        version=manifest.version,
        description=f"{manifest.description} (recognizer statically quantized to INT8)".strip(),
        built=manifest.built,
        files=files,
        embedding=manifest.embedding,
        contract_id=compute_contract_id(files, manifest.embedding),
    )


def write_int8_pack(
    pack_dir: Path,
    out_dir: Path,
    int8_model: Path,
    note: str,
    calibrations: list[SetThresholds],
    force: bool,
) -> Path:
    """Copy the pack with the INT8 recognizer into `out_dir` (built aside, then renamed)."""
    if out_dir.exists() and not force:
        raise ModelError(f"{out_dir} exists (use --force to replace it)")
    manifest = pack_manifest(pack_dir)
    entry = next(f for f in manifest.files if f.task == Task.RECOGNIZER and not f.optional)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a pack folder is readable like others
        for f in manifest.files:
            if f is not entry and (pack_dir / f.path).is_file():
                (staging / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pack_dir / f.path, staging / f.path)
        shutil.copy2(int8_model, staging / INT8_FILE)
        new = int8_manifest(manifest, entry, staging / INT8_FILE, note)
        write_manifest(staging, new)
        if calibrations:
            block = CalibrationBlock(
                revision=1,
                calibrations={r.name: calibration_record(r, new.contract_id) for r in calibrations},
            )
            write_calibration(staging, block)
        verify_pack(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def quantize_pack(
    engine: FaceEngine,
    sets: list[ChipSet],
    out_dir: Path,
    settings: QuantizeSettings,
    data_note: str,
    force: bool = False,
) -> QuantizeResult:
    """Quantize, measure and gate; write the INT8 pack to `out_dir` only when it passes."""
    manifest = engine.manifest
    entry = manifest.file(Task.RECOGNIZER)
    if entry is None or entry.wrapper not in SUPPORTED_WRAPPERS:
        raise ModelError(
            f"{manifest.name}: recognizer wrapper {entry.wrapper if entry else None!r} is not "
            f"supported for quantization (supported: {', '.join(sorted(SUPPORTED_WRAPPERS))})"
        )
    if engine.adapter is not None:
        raise ModelError(f"{manifest.name}: packs with an adapter are not quantized yet")
    if out_dir.exists() and not force:
        raise ModelError(f"{out_dir} exists (use --force to replace it)")
    fp32_path = engine.pack_dir / entry.path
    calib = sample_chips(sets, settings.calibration_chips, settings.seed)
    th = ThresholdSettings(target_fmr=settings.target_fmr, bootstrap_replicates=0)
    with tempfile.TemporaryDirectory(prefix="jifang-int8-") as work:
        int8_path = Path(work) / INT8_FILE
        logger.info("quantizing %s with %d calibration chips", fp32_path, len(calib))
        quantize_model(fp32_path, int8_path, calib, settings)
        fp32 = DlibResNetRecognizer(fp32_path, threads=settings.threads)
        int8 = DlibResNetRecognizer(int8_path, threads=settings.threads)
        fp32_timing, int8_timing = time_models(fp32, int8, calib, settings)
        comparisons: list[SetComparison] = []
        int8_points: list[SetThresholds] = []
        cosines: list[npt.NDArray[np.float32]] = []
        dim = manifest.embedding.dim
        for s in sets:
            a = embed_chip_set(s, lambda c: l2_normalize(fp32.embed_chips(c), np.float32), dim)
            b = embed_chip_set(s, lambda c: l2_normalize(int8.embed_chips(c), np.float32), dim)
            cosines.append(np.sum(a.embeddings * b.embeddings, axis=1))
            comparison, int8_thresholds = compare_set(a, b, s.root or Path(s.name), th)
            comparisons.append(comparison)
            if int8_thresholds is not None:
                int8_points.append(int8_thresholds)
        cos = np.concatenate(cosines)
        result = QuantizeResult(
            fp32_timing=fp32_timing,
            int8_timing=int8_timing,
            cosine_mean=float(cos.mean()),
            cosine_min=float(cos.min()),
            sets=comparisons,
            settings=settings,
            calibration_chips=len(calib),
            fp32_bytes=fp32_path.stat().st_size,
            int8_bytes=int8_path.stat().st_size,
            int8_thresholds=int8_points,
        )
        try:
            fnmr_gate(comparisons, settings.max_fnmr_rise)
        except QuantizationRefused as err:
            result.refused = str(err)
            logger.warning("%s", err)
            return result
        note = (
            f"statically quantized to INT8 by jifang calibrate quantize (onnxruntime QDQ, "
            f"U8 activations, S8 weights, per_channel={settings.per_channel}, "
            f"reduce_range={settings.reduce_range}, {settings.method} ranges from "
            f"{len(calib)} chips of {data_note})"
        )
        result.pack = write_int8_pack(engine.pack_dir, out_dir, int8_path, note, int8_points, force)
    return result


def result_json(result: QuantizeResult) -> dict[str, Any]:
    """Everything measured, machine-readable (the bench summary keys first)."""
    key = fmr_key(result.settings.target_fmr)
    return {
        **result.summary(),
        "target_fmr": key,
        "max_fnmr_rise": result.settings.max_fnmr_rise,
        "cosine_to_fp32": {"mean": result.cosine_mean, "min": result.cosine_min},
        "timing": {
            "basis": result.fp32_timing.basis,
            "threads": result.settings.threads,
            "runs": result.settings.timing_runs,
            "fp32": vars(result.fp32_timing),
            "int8": vars(result.int8_timing),
        },
        "calibration_chips": result.calibration_chips,
        "model_mb": {"fp32": result.fp32_bytes / 1e6, "int8": result.int8_bytes / 1e6},
        "sets": {
            s.name: {
                "genuine_pairs": s.genuine_pairs,
                "impostor_pairs": s.impostor_pairs,
                "fnmr_fp32": s.fnmr_fp32,
                "fnmr_int8": s.fnmr_int8,
                "threshold_fp32": s.threshold_fp32,
                "threshold_int8": s.threshold_int8,
            }
            for s in result.sets
        },
        "pack": str(result.pack) if result.pack else None,
        "refused": result.refused,
    }


def load_chip_sets(
    engine: FaceEngine, data: Path, only: list[str] | None, whole_crop: bool = True
) -> list[ChipSet]:
    """Chips of every (selected) set under `data`; unreadable images are an error."""
    from calibration.datasets import find_sets

    sets = find_sets(data)
    if only:
        missing = sorted(set(only) - {s.name for s in sets})
        if missing:
            raise ModelError(f"{data}: no set named {', '.join(missing)}")
        sets = [s for s in sets if s.name in only]
    chips = [chip_set(engine, s, whole_crop=whole_crop) for s in sets]
    for c in chips:
        if c.unreadable:
            raise ModelError(f"set {c.name}: unreadable image(s): {', '.join(c.unreadable[:5])}")
    return chips
