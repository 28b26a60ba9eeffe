"""Verification thresholds from labelled face sets: per set, never pooled, with intervals.

Method (named in every report and calibration record):
- threshold at a target FMR: the smallest cosine threshold whose FMR on the set's impostor
  pairs does not exceed the target (`calibration.metrics.threshold_at_fmr`);
- a target FMR is only claimed when the impostor pairs support it: at least 3 / FMR pairs
  (rule of three, 95%);
- FNMR interval: Clopper-Pearson (exact binomial) over the genuine pairs at that threshold.
  It treats pairs as independent and the threshold as fixed, so it is a lower bound on the
  uncertainty;
- threshold and FNMR intervals: percentile bootstrap over identities (pairs sharing a person
  are correlated; resampling people keeps that correlation), which also carries the
  threshold's own uncertainty into FNMR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from calibration.datasets import EmbeddedSet
from calibration.metrics import (
    STANDARD_FMRS,
    FloatArray,
    PairScores,
    clopper_pearson,
    equal_error_rate,
    fmr_key,
    identity_bootstrap,
    labelled_pair_scores,
    matrix_pair_scores,
    rates_at,
    supports,
    threshold_at_fmr,
)
from contract.codes import ScoreKind
from models.manifest import Calibration
from models.matching import Cohort

logger = logging.getLogger(__name__)

METHOD = (
    "threshold: smallest {score} with FMR <= target on the set's impostor pairs; "
    "FMR claimed only with >= 3/FMR impostor pairs (rule of three); "
    "fnmr_ci: Clopper-Pearson over genuine pairs at the threshold; "
    "threshold_ci: percentile bootstrap over identities ({reps} replicates)"
)


def method_text(replicates: int, score: ScoreKind = ScoreKind.COSINE) -> str:
    """The method sentence of a record or report, for the score kind calibrated."""
    kind = "cosine" if score == ScoreKind.COSINE else "AS-norm score (cohort: the pack's)"
    return METHOD.format(reps=replicates, score=kind)


class ThresholdSettings(BaseModel):
    """How thresholds and their intervals are computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_fmr: float = Field(default=1e-3, gt=0.0, lt=1.0, description="FMR to calibrate at")
    report_fmrs: tuple[float, ...] = Field(
        default=STANDARD_FMRS, description="FMRs to report (only those the pairs support)"
    )
    ci_level: float = Field(default=0.95, gt=0.5, lt=1.0, description="interval confidence")
    bootstrap_replicates: int = Field(
        default=200, ge=0, le=10_000, description="identity-bootstrap replicates; 0 = none"
    )
    seed: int = Field(default=0, ge=0, description="bootstrap random seed (reproducible runs)")

    @field_validator("report_fmrs")
    @classmethod
    def _in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0.0 < f < 1.0 for f in value):
            raise ValueError("report FMRs must lie in (0, 1)")
        return value

    @property
    def fmrs(self) -> tuple[float, ...]:
        """Report FMRs and the target, highest first, without repeats."""
        return tuple(sorted({*self.report_fmrs, self.target_fmr}, reverse=True))


@dataclass(frozen=True)
class FmrPoint:
    """The operating point of one set at one target FMR."""

    fmr: float
    threshold: float
    achieved_fmr: float
    fnmr: float | None
    fnmr_errors: int
    fnmr_ci: tuple[float, float] | None
    """Clopper-Pearson."""
    fnmr_ci_bootstrap: tuple[float, float] | None
    threshold_ci: tuple[float, float] | None
    """Identity bootstrap."""


@dataclass(frozen=True)
class SetThresholds:
    """Everything measured on one set."""

    name: str
    root: Path
    images: int
    identities: int
    acquisition: dict[str, int]
    failure_to_acquire: float
    scores: PairScores
    points: dict[str, FmrPoint]
    unsupported: dict[str, int]
    """FMR key -> impostor pairs that FMR would need."""
    eer: float
    settings: ThresholdSettings
    score: ScoreKind = ScoreKind.COSINE
    """cosine, or as_norm against the pack's cohort (see `set_thresholds`)."""
    cohort_sha256: str | None = None
    cohort_excluded: int = 0
    """Cohort faces left out because they belong to people in the set."""

    @property
    def genuine_pairs(self) -> int:
        """Number of genuine pairs."""
        return int(self.scores.genuine.size)

    @property
    def impostor_pairs(self) -> int:
        """Number of impostor pairs."""
        return int(self.scores.impostor.size)

    @property
    def target(self) -> FmrPoint | None:
        """The point at the target FMR, or None when the impostor pairs cannot support it."""
        return self.points.get(fmr_key(self.settings.target_fmr))


class CalibrationDataError(ValueError):
    """The data cannot give a threshold (unreadable images, one identity, no faces)."""


def check_embedded(embedded: EmbeddedSet) -> None:
    """Refuse a set that cannot be calibrated on, naming the reason and the files."""
    if embedded.unreadable:
        shown = ", ".join(embedded.unreadable[:5])
        more = f" and {len(embedded.unreadable) - 5} more" if len(embedded.unreadable) > 5 else ""
        raise CalibrationDataError(
            f"set {embedded.name}: {len(embedded.unreadable)} unreadable image(s): {shown}{more}"
        )
    identities = set(embedded.labels)
    if len(identities) < 2:
        raise CalibrationDataError(
            f"set {embedded.name}: faces of {len(identities)} identity found; impostor pairs "
            "need at least two identities"
        )


def set_thresholds(
    embedded: EmbeddedSet,
    root: Path,
    settings: ThresholdSettings,
    cohort: Cohort | None = None,
) -> SetThresholds:
    """Scores, thresholds and intervals of one embedded set.

    With the pack's `cohort`, pair scores are AS-norm scores, as the gate computes them,
    with the distractors alone as cohort (`ScoreNorm.pair_matrix`): every impostor is
    scored as a stranger. The cohort faces of the set's own people are left out.
    """
    check_embedded(embedded)
    excluded = 0
    if cohort is None:
        scores = labelled_pair_scores(embedded.embeddings, embedded.labels)
    else:
        norm, excluded = cohort.norm(f"{embedded.name}/{label}" for label in set(embedded.labels))
        scores = matrix_pair_scores(norm.pair_matrix(embedded.embeddings), embedded.labels)
    genuine, impostor = scores.genuine, scores.impostor
    supported = tuple(f for f in settings.fmrs if supports(impostor.size, f))
    unsupported = {fmr_key(f): int(np.ceil(3.0 / f)) for f in settings.fmrs if f not in supported}
    boot = (
        identity_bootstrap(
            scores, supported, settings.bootstrap_replicates, settings.ci_level, settings.seed
        )
        if settings.bootstrap_replicates and supported
        else None
    )
    points: dict[str, FmrPoint] = {}
    for fmr in supported:
        key = fmr_key(fmr)
        threshold = threshold_at_fmr(impostor, fmr)
        fnmr, achieved = rates_at(genuine, impostor, threshold)
        errors = int(np.sum(genuine < threshold))
        points[key] = FmrPoint(
            fmr=fmr,
            threshold=threshold,
            achieved_fmr=achieved,
            fnmr=fnmr if genuine.size else None,
            fnmr_errors=errors,
            fnmr_ci=clopper_pearson(errors, genuine.size, settings.ci_level)
            if genuine.size
            else None,
            fnmr_ci_bootstrap=boot.fnmr.get(key) if boot else None,
            threshold_ci=boot.threshold.get(key) if boot else None,
        )
    return SetThresholds(
        name=embedded.name,
        root=root,
        images=embedded.images,
        identities=len(set(embedded.labels)),
        acquisition=dict(sorted(embedded.methods.items())),
        failure_to_acquire=embedded.failure_to_acquire,
        scores=scores,
        points=points,
        unsupported=unsupported,
        eer=equal_error_rate(genuine, impostor),
        settings=settings,
        score=ScoreKind.COSINE if cohort is None else ScoreKind.AS_NORM,
        cohort_sha256=None if cohort is None else cohort.sha256,
        cohort_excluded=excluded,
    )


def calibration_record(result: SetThresholds, contract_id: str) -> Calibration:
    """The calibration block entry for a set's target point (raises if not supported)."""
    point = result.target
    if point is None:
        raise CalibrationDataError(
            f"set {result.name}: {result.impostor_pairs} impostor pairs cannot support FMR "
            f"{result.settings.target_fmr:g} (needs >= {int(np.ceil(3.0 / result.settings.target_fmr))})"
        )
    acquired = ", ".join(f"{k} {v}" for k, v in result.acquisition.items())
    return Calibration(
        threshold=point.threshold,
        target_fmr=point.fmr,
        genuine_pairs=result.genuine_pairs,
        impostor_pairs=result.impostor_pairs,
        fnmr_at_target=point.fnmr,
        data=(
            f"set {result.name} ({result.root}): {result.images} images of "
            f"{result.identities} identities; acquisition: {acquired}"
        ),
        contract_id=contract_id,
        created=datetime.now(UTC).date(),
        images=result.images,
        identities=result.identities,
        ci_level=result.settings.ci_level,
        threshold_ci=point.threshold_ci,
        fnmr_ci=point.fnmr_ci,
        method=method_text(result.settings.bootstrap_replicates, result.score),
        score=result.score,
        cohort_sha256=result.cohort_sha256,
    )


def summary_json(results: list[SetThresholds]) -> dict[str, Any]:
    """The `--json` document: exactly the keys the issue fixes, per set."""
    return {
        "sets": {
            r.name: {
                "genuine_pairs": r.genuine_pairs,
                "impostor_pairs": r.impostor_pairs,
                "fnmr_at_fmr": {k: p.fnmr for k, p in r.points.items() if p.fnmr is not None},
                "threshold_at_fmr": {k: p.threshold for k, p in r.points.items()},
            }
            for r in results
        }
    }


def detail_json(results: list[SetThresholds], pack: str, contract_id: str) -> dict[str, Any]:
    """Everything the report shows, machine-readable (intervals, methods, acquisition)."""

    def point(p: FmrPoint) -> dict[str, Any]:
        return {
            "threshold": p.threshold,
            "threshold_ci_bootstrap": p.threshold_ci,
            "achieved_fmr": p.achieved_fmr,
            "fnmr": p.fnmr,
            "fnmr_errors": p.fnmr_errors,
            "fnmr_ci_clopper_pearson": p.fnmr_ci,
            "fnmr_ci_bootstrap": p.fnmr_ci_bootstrap,
        }

    settings = results[0].settings if results else ThresholdSettings()
    return {
        "pack": pack,
        "contract_id": contract_id,
        "method": method_text(
            settings.bootstrap_replicates, results[0].score if results else ScoreKind.COSINE
        ),
        "ci_level": settings.ci_level,
        "target_fmr": settings.target_fmr,
        "sets": {
            r.name: {
                "data": str(r.root),
                "images": r.images,
                "identities": r.identities,
                "acquisition": r.acquisition,
                "failure_to_acquire": r.failure_to_acquire,
                "genuine_pairs": r.genuine_pairs,
                "impostor_pairs": r.impostor_pairs,
                "eer": None if np.isnan(r.eer) else r.eer,
                "points": {k: point(p) for k, p in r.points.items()},
                "unsupported_fmrs": r.unsupported,
            }
            for r in results
        },
    }


def score_summary(values: FloatArray) -> str:
    """`n, mean ± sd, [min, max]` of a score array, for logs and reports."""
    if values.size == 0:
        return "none"
    return (
        f"{values.size} pairs, mean {values.mean():.4f} ± {values.std():.4f}, "
        f"range [{values.min():.4f}, {values.max():.4f}]"
    )
