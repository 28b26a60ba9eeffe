"""The model pack manifest: what each file is, where it came from, and how to run it.

A pack is a folder with `manifest.yaml`, the model files it lists, and an optional
`calibration.yaml` (thresholds written by the calibration tools). The wrapper that runs each
file is named explicitly in the manifest; nothing is guessed from tensor shapes.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.codes import ScoreKind
from contract.messages import MAX_NORMALISED_SCORE
from models.errors import ModelError
from models.types import Metric, Task

MANIFEST_NAME = "manifest.yaml"
CALIBRATION_NAME = "calibration.yaml"
CALIBRATION_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Names of calibrations (a population or a site): safe in YAML keys, paths and config."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One model file in a pack."""

    path: str = Field(pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", description="relative")
    task: Task
    wrapper: str = Field(min_length=1, description="runtime wrapper id, see models.runtime")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str = Field(min_length=1, description="SPDX id or licence name")
    commercial_use: bool = Field(description="whether the licence allows commercial deployment")
    source: str = Field(min_length=1, description="where the weights came from")
    params: dict[str, Any] = Field(
        default_factory=dict, description="wrapper options (input size, preprocessing, ...)"
    )
    optional: bool = Field(default=False, description="the engine runs without this file")


class EmbeddingSpec(_Strict):
    """How embeddings are made comparable."""

    dim: int = Field(ge=1, le=4096)
    metric: Metric = Metric.COSINE
    normalize: Literal["l2"] = "l2"
    alignment: Literal["dlib_chip", "arcface_112"] = Field(
        description="dlib_chip: dlib's 5-point chip; arcface_112: insightface's 112 px template"
    )
    chip_size: int = Field(ge=32, le=512)
    chip_padding: float = Field(default=0.25, ge=0.0, le=1.0)


class PackManifest(_Strict):
    """The manifest of one model pack."""

    format: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    built: date | None = None
    files: tuple[FileEntry, ...] = Field(min_length=1)
    embedding: EmbeddingSpec
    contract_id: str = Field(pattern=r"^[0-9a-f]{16,64}$")

    @model_validator(mode="after")
    def _consistent(self) -> PackManifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        for task in (Task.DETECTOR, Task.RECOGNIZER):
            if sum(1 for f in self.files if f.task == task and not f.optional) != 1:
                raise ValueError(f"a pack needs exactly one required {task.value} file")
        expected = compute_contract_id(self.files, self.embedding)
        if self.contract_id != expected:
            raise ValueError(
                f"contract_id {self.contract_id} does not match the recognizer, adapter and "
                f"embedding spec (expected {expected})"
            )
        return self

    @property
    def commercial_use(self) -> bool:
        """True when every required file's licence allows commercial deployment."""
        return all(f.commercial_use for f in self.files if not f.optional)

    def file(self, task: Task) -> FileEntry | None:
        """The (first) file for a task, or None."""
        return next((f for f in self.files if f.task == task), None)


def compute_contract_id(files: tuple[FileEntry, ...] | list[FileEntry], spec: EmbeddingSpec) -> str:
    """Hash everything that makes two embeddings comparable.

    The recognizer and adapter weights, their wrapper options, the alignment and the
    normalisation; not the detector, which only finds the face.
    """
    parts = [
        {"task": f.task.value, "wrapper": f.wrapper, "sha256": f.sha256, "params": f.params}
        for f in files
        if f.task in (Task.RECOGNIZER, Task.ADAPTER)
    ]
    canonical = json.dumps(
        {"files": parts, "embedding": spec.model_dump(mode="json")}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class IdentificationPoint(_Strict):
    """1:N search measured at a calibration's threshold (`jifang calibrate identification`):
    the false positive identification rate for searches by people in no gallery, and the
    false negative rate for enrolled people, under the gate's rule with `min_margin`."""

    operators: int = Field(ge=1, description="operators in the measured gallery")
    templates: int = Field(ge=1, description="templates in the measured gallery")
    min_margin: float = Field(ge=0.0, le=2.0, description="the rule's margin over the second")
    mated_searches: int = Field(ge=0)
    non_mated_searches: int = Field(ge=1)
    false_positives: int = Field(ge=0)
    fpir: float = Field(ge=0.0, le=1.0)
    fpir_upper: float = Field(
        ge=0.0, le=1.0, description="one-sided 95% upper bound of FPIR (Clopper-Pearson)"
    )
    fnir: float | None = Field(default=None, ge=0.0, le=1.0)
    data: str = ""
    created: date | None = None


class Calibration(_Strict):
    """One named calibration: a verification threshold and the evidence behind it."""

    threshold: float = Field(
        allow_inf_nan=False, description="score to accept, on the scale `score` names"
    )
    score: ScoreKind = Field(
        default=ScoreKind.COSINE,
        description="cosine: raw cosine similarity; as_norm: normalised against the pack's "
        "cohort (models.matching.ScoreNorm), which must then be the one named below",
    )
    cohort_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="as_norm: the cohort file the scores were normalised against",
    )
    target_fmr: float = Field(gt=0.0, lt=1.0)
    genuine_pairs: int = Field(ge=0)
    impostor_pairs: int = Field(ge=0)
    fnmr_at_target: float | None = Field(default=None, ge=0.0, le=1.0)
    data: str = Field(default="", description="which data the calibration came from")
    contract_id: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    created: date | None = None
    images: int | None = Field(default=None, ge=0, description="images embedded")
    identities: int | None = Field(default=None, ge=0, description="identities in the data")
    ci_level: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="confidence level of the intervals below"
    )
    threshold_ci: tuple[float, float] | None = Field(
        default=None, description="interval of the threshold (see `method`)"
    )
    fnmr_ci: tuple[float, float] | None = Field(
        default=None, description="interval of fnmr_at_target (see `method`)"
    )
    method: str = Field(default="", description="how the threshold and intervals were computed")
    identification: IdentificationPoint | None = Field(
        default=None, description="1:N measured at this threshold (the gate's 1:N risk bound)"
    )

    @model_validator(mode="after")
    def _on_scale(self) -> Calibration:
        if self.score == ScoreKind.COSINE:
            if not -1.0 <= self.threshold <= 1.0:
                raise ValueError(f"a cosine threshold must be in -1..1, got {self.threshold}")
            if self.cohort_sha256 is not None:
                raise ValueError("a cosine calibration names no cohort")
        else:
            if abs(self.threshold) > MAX_NORMALISED_SCORE:
                raise ValueError(
                    f"a normalised threshold must be within ±{MAX_NORMALISED_SCORE:g}, "
                    f"got {self.threshold}"
                )
            if self.cohort_sha256 is None:
                raise ValueError("an as_norm calibration must name its cohort (cohort_sha256)")
        return self

    @property
    def supported_fmr(self) -> float:
        """The smallest FMR the impostor pair count can support (rule of three at 95%)."""
        return 3.0 / self.impostor_pairs if self.impostor_pairs else 1.0


class PadCalibration(_Strict):
    """One named calibration of the passive PAD: the two score bands and the rates behind them.

    Written by `jifang calibrate liveness` from a site's live and attack presentations.
    """

    live_threshold: float = Field(
        ge=0.0, le=1.0, description="window live score at or above which passive passes"
    )
    spoof_threshold: float = Field(
        ge=0.0, le=1.0, description="window live score below which passive refuses outright"
    )
    pad_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="the PAD file the scores came from"
    )
    bpcer: float = Field(ge=0.0, le=1.0, description="bona fide below live_threshold")
    apcer: dict[str, float] = Field(description="attacks at or above live_threshold, per type")
    bpcer_refused: float = Field(
        ge=0.0, le=1.0, description="bona fide below spoof_threshold (refused without a challenge)"
    )
    counts: dict[str, int] = Field(description="presentations per class folder")
    data: str = Field(default="", description="which data the calibration came from")
    created: date | None = None
    method: str = Field(default="", description="how the thresholds were chosen")

    @model_validator(mode="after")
    def _bands(self) -> PadCalibration:
        if self.spoof_threshold > self.live_threshold:
            raise ValueError("spoof_threshold must not exceed live_threshold")
        return self


class CalibrationBlock(_Strict):
    """All calibrations of a pack, by name (a population or a site)."""

    format: Literal[1] = 1
    revision: int = Field(default=0, ge=0, description="bumped on every write by the tools")
    calibrations: dict[str, Calibration] = Field(default_factory=dict)
    pad: dict[str, PadCalibration] = Field(
        default_factory=dict, description="passive PAD calibrations, by name"
    )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelError(f"{path}: cannot read ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ModelError(f"{path}: not valid YAML ({err})") from err


def _format_errors(path: Path, err: ValidationError) -> ModelError:
    lines = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
    )
    return ModelError(f"{path}: {lines}")


def load_manifest(pack_dir: Path) -> PackManifest:
    """Read and validate a pack's manifest.yaml (checksums are checked by `verify_pack`).

    Only the file: a vendor folder without one is recognised by `models.store.pack_manifest`.
    """
    path = pack_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{pack_dir}: not a model pack (no {MANIFEST_NAME})")
    try:
        return PackManifest.model_validate(_load_yaml(path))
    except ValidationError as err:
        raise _format_errors(path, err) from err


def write_manifest(pack_dir: Path, manifest: PackManifest) -> Path:
    """Write `manifest.yaml` into a pack folder."""
    path = pack_dir / MANIFEST_NAME
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_calibration(pack_dir: Path) -> CalibrationBlock:
    """Read the pack's calibration block; an absent file is an empty block."""
    path = pack_dir / CALIBRATION_NAME
    if not path.is_file():
        return CalibrationBlock()
    try:
        return CalibrationBlock.model_validate(_load_yaml(path) or {})
    except ValidationError as err:
        raise _format_errors(path, err) from err


def write_calibration(pack_dir: Path, block: CalibrationBlock) -> Path:
    """Write the calibration block atomically (a reader never sees half a file)."""
    path = pack_dir / CALIBRATION_NAME
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(
        yaml.safe_dump(block.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    tmp.replace(path)
    return path


def put_calibration(
    pack_dir: Path, name: str, calibration: Calibration, manifest: PackManifest | None = None
) -> CalibrationBlock:
    """Add or replace one named calibration in a pack's block and write it (one revision up)."""
    return put_calibrations(pack_dir, {name: calibration}, manifest)


def put_calibrations(
    pack_dir: Path, calibrations: dict[str, Calibration], manifest: PackManifest | None = None
) -> CalibrationBlock:
    """Add or replace several named calibrations in one write (all or none).

    `manifest` is the pack's (default: its manifest.yaml); the calibrations must match its
    contract id.
    """
    manifest = manifest or load_manifest(pack_dir)
    block = load_calibration(pack_dir)
    merged = dict(block.calibrations)
    for name, cal in calibrations.items():
        if cal.contract_id != manifest.contract_id:
            raise ModelError(
                f"{pack_dir.name}: calibration {name!r} is for contract {cal.contract_id}, "
                f"the pack's is {manifest.contract_id}"
            )
        if not CALIBRATION_NAME_PATTERN.fullmatch(name):
            raise ModelError(
                f"calibration name {name!r} must match {CALIBRATION_NAME_PATTERN.pattern}"
            )
        merged[name] = cal
    updated = CalibrationBlock(revision=block.revision + 1, calibrations=merged)
    write_calibration(pack_dir, updated)
    return updated


def put_pad_calibration(pack_dir: Path, name: str, calibration: PadCalibration) -> CalibrationBlock:
    """Add or replace one named PAD calibration (one revision up, written atomically)."""
    if not CALIBRATION_NAME_PATTERN.fullmatch(name):
        raise ModelError(f"calibration name {name!r} must match {CALIBRATION_NAME_PATTERN.pattern}")
    block = load_calibration(pack_dir)
    updated = block.model_copy(
        update={"revision": block.revision + 1, "pad": {**block.pad, name: calibration}}
    )
    write_calibration(pack_dir, updated)
    return updated


def verify_pack(pack_dir: Path, manifest: PackManifest | None = None) -> PackManifest:
    """Check every file's checksum against the manifest; raise ModelError naming the file.

    `manifest` defaults to the pack's manifest.yaml (`models.store.verified_manifest` also
    takes vendor folders without one).
    """
    manifest = manifest or load_manifest(pack_dir)
    for entry in manifest.files:
        path = pack_dir / entry.path
        if not path.is_file():
            if entry.optional:
                continue
            raise ModelError(f"{pack_dir.name}: {entry.path} is missing")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelError(
                f"{pack_dir.name}: {entry.path} fails its checksum "
                f"(manifest {entry.sha256[:12]}…, file {actual[:12]}…)"
            )
    calibration = load_calibration(pack_dir)
    for name, cal in calibration.calibrations.items():
        if cal.contract_id != manifest.contract_id:
            raise ModelError(
                f"{pack_dir.name}: calibration {name!r} was made for contract "
                f"{cal.contract_id}, the pack's is {manifest.contract_id}"
            )
    return manifest
