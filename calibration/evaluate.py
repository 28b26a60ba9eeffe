"""Verification accuracy of a pack on labelled face sets, each set on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration.datasets import EmbeddedSet, embed_set, find_sets
from calibration.metrics import pair_scores, rates_at, score_report
from models.engine import FaceEngine


def set_result(embedded: EmbeddedSet, threshold: float | None) -> dict[str, Any]:
    """The JSON record of one evaluated set."""
    genuine, impostor = pair_scores(embedded.embeddings, embedded.labels)
    report = score_report(genuine, impostor)
    result: dict[str, Any] = {
        "images": embedded.images,
        "failure_to_acquire": embedded.failure_to_acquire,
        "acquisition": dict(sorted(embedded.methods.items())),
        "genuine_pairs": report.genuine_pairs,
        "impostor_pairs": report.impostor_pairs,
        "fnmr_at_fmr": report.fnmr_at_fmr,
        "threshold_at_fmr": report.threshold_at_fmr,
        "eer": report.eer,
    }
    if threshold is not None:
        fnmr, fmr = rates_at(genuine, impostor, threshold)
        if genuine.size:
            result["fnmr_at_threshold"] = fnmr
        if impostor.size:
            result["fmr_at_threshold"] = fmr
    return result


def evaluate(
    engine: FaceEngine,
    data: Path,
    threshold: float | None = None,
    whole_crop: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """`{"pack": ..., "sets": {name: record}}` for every set under `data`."""
    sets: dict[str, Any] = {}
    for face_set in find_sets(data):
        sets[face_set.name] = set_result(
            embed_set(engine, face_set, whole_crop=whole_crop, progress=progress), threshold
        )
    return {
        "pack": engine.manifest.name,
        "pack_version": engine.manifest.version,
        "contract_id": engine.contract_id,
        "threshold": threshold,
        "whole_crop_fallback": whole_crop,
        "sets": sets,
    }
