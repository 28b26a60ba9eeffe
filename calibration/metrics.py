"""Verification error rates from genuine and impostor similarity scores.

A pair is accepted when its similarity is >= the threshold. FMR is the fraction of impostor
pairs accepted, FNMR the fraction of genuine pairs rejected. A target FMR is only reported
when the impostor pairs can support it: at least `3 / fmr` pairs (the "rule of three": with
zero errors in n trials the 95% upper bound on the rate is about 3/n).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    fmr, fnmr = det_curve(genuine, impostor)
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


@dataclass(frozen=True)
class PairScores:
    """Every pair's score with the identities of its two sides (codes into `identities`)."""

    genuine: FloatArray
    genuine_identity: npt.NDArray[np.intp]
    impostor: FloatArray
    impostor_identities: npt.NDArray[np.intp]
    """[M, 2]: the identity codes of the two images of each impostor pair."""
    identities: tuple[str, ...]


Labels = Sequence[str] | npt.NDArray[np.str_]
Embeddings = npt.NDArray[np.float32] | npt.NDArray[np.float64]


def labelled_pair_scores(embeddings: Embeddings, labels: Labels) -> PairScores:
    """All genuine and impostor cosine scores among L2-normalised embeddings (each pair once)."""
    if len(labels) != len(embeddings):
        raise ValueError("one label per embedding")
    sims = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
    return matrix_pair_scores(sims, labels)


def matrix_pair_scores(scores: FloatArray, labels: Labels) -> PairScores:
    """The pairs of a square matrix of scores between images (each pair once, i < j)."""
    if scores.shape != (len(labels), len(labels)):
        raise ValueError(f"need a {len(labels)}x{len(labels)} score matrix, got {scores.shape}")
    names, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
    first, second = np.triu_indices(len(labels), k=1)
    same = codes[first] == codes[second]
    values = scores[first, second]
    return PairScores(
        genuine=values[same],
        genuine_identity=codes[first[same]],
        impostor=values[~same],
        impostor_identities=np.stack([codes[first[~same]], codes[second[~same]]], axis=1),
        identities=tuple(str(n) for n in names),
    )


def pair_scores(embeddings: Embeddings, labels: Labels) -> tuple[FloatArray, FloatArray]:
    """All genuine and impostor cosine scores among L2-normalised embeddings (each pair once)."""
    scores = labelled_pair_scores(embeddings, labels)
    return scores.genuine, scores.impostor


def clopper_pearson(errors: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided binomial interval for an error rate `errors/trials`."""
    from scipy.stats import beta

    if trials <= 0:
        raise ValueError("an interval needs at least one trial")
    if not 0 <= errors <= trials:
        raise ValueError(f"errors {errors} outside 0..{trials}")
    alpha = 1.0 - level
    low = 0.0 if errors == 0 else float(beta.ppf(alpha / 2, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta.ppf(1 - alpha / 2, errors + 1, trials - errors))
    return low, high


def weighted_threshold_at_fmr(impostor_desc: FloatArray, weights: FloatArray, fmr: float) -> float:
    """`threshold_at_fmr` where impostor pair i counts `weights[i]` times (scores descending).

    With unit weights it equals `threshold_at_fmr`; the identity bootstrap uses it.
    """
    keep = weights > 0
    scores = impostor_desc[keep]
    if scores.size == 0:
        raise ValueError("no impostor scores with weight")
    cumulative = np.cumsum(weights[keep])
    # Pairs strictly above the chosen score are accepted; their weight must stay <= fmr * total.
    allowed = int(np.searchsorted(cumulative, fmr * cumulative[-1], side="right"))
    if allowed >= scores.size:
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))


@dataclass(frozen=True)
class BootstrapIntervals:
    """Percentile intervals from resampling identities, per target FMR key."""

    level: float
    replicates: int
    threshold: dict[str, tuple[float, float]]
    fnmr: dict[str, tuple[float, float]]


def identity_bootstrap(
    scores: PairScores,
    fmrs: tuple[float, ...],
    replicates: int,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapIntervals:
    """Intervals for the threshold and FNMR at each FMR by resampling identities.

    Pairs sharing an image or an identity are not independent, so resampling pairs would
    understate the spread. Each replicate draws identities with replacement; a pair counts
    once per draw of its identity (genuine) or per product of its two identities' draws
    (impostor); pairs between two draws of the same identity are left out.
    """
    if replicates < 1:
        raise ValueError("the bootstrap needs at least one replicate")
    rng = np.random.default_rng(seed)
    n_ids = len(scores.identities)
    order = np.argsort(-scores.impostor, kind="stable")
    impostor_desc = scores.impostor[order]
    imp_ids = scores.impostor_identities[order]
    thresholds = np.full((replicates, len(fmrs)), np.nan)
    fnmrs = np.full((replicates, len(fmrs)), np.nan)
    for r in range(replicates):
        draws = np.bincount(rng.integers(0, n_ids, n_ids), minlength=n_ids).astype(np.float64)
        imp_w = draws[imp_ids[:, 0]] * draws[imp_ids[:, 1]]
        if not imp_w.any():
            continue
        gen_w = draws[scores.genuine_identity]
        for j, fmr in enumerate(fmrs):
            t = weighted_threshold_at_fmr(impostor_desc, imp_w, fmr)
            thresholds[r, j] = t
            if gen_w.sum() > 0:
                fnmrs[r, j] = float(np.sum(gen_w * (scores.genuine < t)) / gen_w.sum())
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(column: FloatArray) -> tuple[float, float] | None:
        finite = column[np.isfinite(column)]
        if finite.size == 0:
            return None
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        return float(low), float(high)

    thr_ci: dict[str, tuple[float, float]] = {}
    fnmr_ci: dict[str, tuple[float, float]] = {}
    for j, fmr in enumerate(fmrs):
        if (t_ci := interval(thresholds[:, j])) is not None:
            thr_ci[fmr_key(fmr)] = t_ci
        if (f_ci := interval(fnmrs[:, j])) is not None:
            fnmr_ci[fmr_key(fmr)] = f_ci
    return BootstrapIntervals(level, replicates, thr_ci, fnmr_ci)


def det_curve(genuine: FloatArray, impostor: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(FMR, FNMR) at every distinct score used as the threshold, ascending threshold."""
    candidates = np.unique(np.concatenate([genuine, impostor]))
    fnmr = np.searchsorted(np.sort(genuine), candidates, side="left") / max(genuine.size, 1)
    fmr = 1.0 - np.searchsorted(np.sort(impostor), candidates, side="left") / max(impostor.size, 1)
    return fmr.astype(np.float64), fnmr.astype(np.float64)
