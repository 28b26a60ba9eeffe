"""Verification error rates from genuine and impostor similarity scores.

A pair is accepted when its similarity is >= the threshold. FMR is the fraction of impostor
pairs accepted, FNMR the fraction of genuine pairs rejected. A target FMR is only reported
when the impostor pairs can support it: at least `3 / fmr` pairs (the "rule of three": with
zero errors in n trials the 95% upper bound on the rate is about 3/n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
STANDARD_FMRS = (1e-2, 1e-3, 1e-4, 1e-5)


def fmr_key(fmr: float) -> str:
    """The JSON key of a target FMR, e.g. 1e-3 -> "1e-3"."""
    return f"{fmr:.0e}".replace("e-0", "e-")


def supports(impostor_pairs: int, fmr: float) -> bool:
    """Whether `impostor_pairs` can support a claim of FMR `fmr` (rule of three)."""
    return impostor_pairs >= 3.0 / fmr


def threshold_at_fmr(impostor: FloatArray, fmr: float) -> float:
    """The smallest threshold whose FMR does not exceed `fmr`."""
    if impostor.size == 0:
        raise ValueError("no impostor scores")
    ordered = np.sort(impostor)[::-1]
    allowed = int(np.floor(fmr * ordered.size))
    if allowed >= ordered.size:
        return float(ordered[-1])
    # Accept scores strictly above the (allowed+1)-th highest impostor score.
    return float(np.nextafter(ordered[allowed], np.inf))


def rates_at(genuine: FloatArray, impostor: FloatArray, threshold: float) -> tuple[float, float]:
    """(FNMR, FMR) at a threshold."""
    fnmr = float(np.mean(genuine < threshold)) if genuine.size else float("nan")
    fmr = float(np.mean(impostor >= threshold)) if impostor.size else float("nan")
    return fnmr, fmr


def equal_error_rate(genuine: FloatArray, impostor: FloatArray) -> float:
    """The error rate where FNMR and FMR cross (mean of the two at the closest threshold)."""
    if genuine.size == 0 or impostor.size == 0:
        return float("nan")
    candidates = np.unique(np.concatenate([genuine, impostor]))
    gen = np.sort(genuine)
    imp = np.sort(impostor)
    fnmr = np.searchsorted(gen, candidates, side="left") / gen.size
    fmr = 1.0 - np.searchsorted(imp, candidates, side="left") / imp.size
    i = int(np.argmin(np.abs(fnmr - fmr)))
    return float((fnmr[i] + fmr[i]) / 2.0)


@dataclass(frozen=True)
class ScoreReport:
    """Error rates of one set of scores."""

    genuine_pairs: int
    impostor_pairs: int
    fnmr_at_fmr: dict[str, float]
    threshold_at_fmr: dict[str, float]
    eer: float


def score_report(
    genuine: FloatArray, impostor: FloatArray, fmrs: tuple[float, ...] = STANDARD_FMRS
) -> ScoreReport:
    """FNMR and threshold at every target FMR the pair counts support, and the EER."""
    fnmr_at: dict[str, float] = {}
    thr_at: dict[str, float] = {}
    for fmr in fmrs:
        if impostor.size and supports(impostor.size, fmr):
            threshold = threshold_at_fmr(impostor, fmr)
            thr_at[fmr_key(fmr)] = threshold
            if genuine.size:
                fnmr_at[fmr_key(fmr)] = rates_at(genuine, impostor, threshold)[0]
    return ScoreReport(
        int(genuine.size), int(impostor.size), fnmr_at, thr_at, equal_error_rate(genuine, impostor)
    )


def pair_scores(
    embeddings: npt.NDArray[np.float32], labels: list[str]
) -> tuple[FloatArray, FloatArray]:
    """All genuine and impostor cosine scores among L2-normalised embeddings (each pair once)."""
    if len(labels) != len(embeddings):
        raise ValueError("one label per embedding")
    sims = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    upper = np.triu_indices(len(labels), k=1)
    same = codes[upper[0]] == codes[upper[1]]
    values = sims[upper]
    return values[same], values[~same]
