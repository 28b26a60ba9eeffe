"""The population protocol of bench/population.py: which sets, which images, which pairs.

- Population detection: a set whose name matches a pattern is East Asian; a set where every
  identity has one image is a singleton set (between-person material only).
- Quality exclusion: images a set's QUALITY.tsv flags `severe` are left out.
- Splits: East Asian sets and the singletons are split by identity into fit and test
  identities (FIT_FRACTION of them fit, floor); Western sets are all test.
- Pair scoring: cosine of unit embeddings for jifang, minus the Euclidean distance for the
  dlib reference; FNMR at FMR 1e-3 (flagged when the impostor pairs cannot support it) and EER.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.metrics import (
    equal_error_rate,
    matrix_pair_scores,
    rates_at,
    supports,
    threshold_at_fmr,
)
from models.vectors import mirror_mean

Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[np.str_]

FMR = 1e-3
EAST_ASIAN_PATTERN = r"east_asian|(^|_)ea(_|$)|cjk|casia|chinese|china"
"""Set names taken as East Asian populations (case-insensitive search)."""
FIT_FRACTION = 0.5
QUALITY_FILE = "QUALITY.tsv"
EXCLUDED_FLAG = "severe"


class ProtocolError(ValueError):
    """The face sets cannot be run through the protocol (the message says why)."""


@dataclass(frozen=True)
class SetEmbeddings:
    """Per-image embeddings of one set; rows where a pipeline failed hold NaN."""

    name: str
    labels: Labels
    paths: npt.NDArray[np.str_]
    dlib: npt.NDArray[np.float64]
    """Nx128 dlib reference descriptors."""
    raw: npt.NDArray[np.float32]
    """Nx128 jifang recognizer outputs before adapter and normalisation."""
    raw_mirror: npt.NDArray[np.float32]
    """The same for the mirror image of each chip."""
    method: npt.NDArray[np.str_]
    """How jifang acquired the face: detected, padded, whole_crop, none."""
    sharpness: npt.NDArray[np.float32]
    face_px: npt.NDArray[np.float32]
    yaw: npt.NDArray[np.float32]


@dataclass(frozen=True)
class Populations:
    """Which sets are East Asian (adapter fitted and applied) and which holds singletons."""

    east_asian: tuple[str, ...]
    singletons: str | None

    def adapted(self, name: str) -> bool:
        """Whether jifang's configuration for this set's population has the adapter."""
        return name in self.east_asian or name == self.singletons


def classify(sets: dict[str, SetEmbeddings], pattern: str) -> Populations:
    """East Asian by name; the singleton set by shape (every identity has one image)."""
    named = [name for name in sets if re.search(pattern, name, re.IGNORECASE)]
    singles = [n for n in named if np.unique(sets[n].labels).size == sets[n].labels.size]
    if len(singles) > 1:
        raise ProtocolError(f"more than one East Asian singleton set: {', '.join(singles)}")
    east_asian = tuple(n for n in named if n not in singles)
    return Populations(east_asian, singles[0] if singles else None)


def usable_rows(data: SetEmbeddings, set_root: Path) -> npt.NDArray[np.bool_]:
    """False for images the set's QUALITY.tsv flags `severe`; all True without the file."""
    usable = np.ones(len(data.paths), bool)
    table = set_root / QUALITY_FILE
    if not table.is_file():
        return usable
    with table.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if rows and not {"path", "flag"} <= set(rows[0]):
        raise ProtocolError(f"{table}: needs the columns path and flag")
    flagged = {str(set_root / row["path"]) for row in rows if row["flag"] == EXCLUDED_FLAG}
    usable &= ~np.isin(data.paths, sorted(flagged))
    return usable


def cosine_pairs(vectors: Matrix, labels: Labels) -> tuple[Matrix, Matrix]:
    """Genuine and impostor cosine scores among normalised vectors (each pair once)."""
    # One operand twice (numpy's symmetric product): the published figures were made so, and
    # two copies (calibration.metrics.pair_scores) differ from it in the last bit.
    pairs = matrix_pair_scores(vectors @ vectors.T, labels)
    return pairs.genuine, pairs.impostor


def euclidean_pairs(vectors: Matrix, labels: Labels) -> tuple[Matrix, Matrix]:
    """dlib's native score: minus the Euclidean distance."""
    sq = np.sum(vectors**2, axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * vectors @ vectors.T, 0.0))
    pairs = matrix_pair_scores(-dist, labels)
    return pairs.genuine, pairs.impostor


def rates(genuine: Matrix, impostor: Matrix) -> dict[str, Any]:
    """FNMR at FMR 1e-3 (flagged when the impostor pairs cannot support it) and EER."""
    threshold = threshold_at_fmr(impostor, FMR)
    return {
        "fnmr@1e-3": rates_at(genuine, impostor, threshold)[0],
        "eer": equal_error_rate(genuine, impostor),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "supported": supports(impostor.size, FMR),
        "threshold": threshold,
    }


@dataclass(frozen=True)
class Split:
    """Which rows of each set are test rows in one repeat (and what was fitted on)."""

    test_rows: dict[str, npt.NDArray[np.bool_]]
    fit_ids: dict[str, int]
    test_ids: dict[str, int]
    fit_raw: npt.NDArray[np.float64]
    """Fit rows as the mirrored recognizer outputs them (what the shipped adapter sees)."""
    fit_plain: npt.NDArray[np.float32]
    """Fit rows of the plain recognizer (for the no-mirror variant)."""
    fit_labels: list[str]


def make_split(
    sets: dict[str, SetEmbeddings],
    populations: Populations,
    usable: dict[str, npt.NDArray[np.bool_]],
    rng: np.random.Generator,
) -> Split:
    """Split East Asian sets and the singletons by identity; Western sets are all test."""
    test_rows: dict[str, npt.NDArray[np.bool_]] = {}
    fit_ids: dict[str, int] = {}
    test_ids: dict[str, int] = {}
    fit_raw: list[npt.NDArray[np.float64]] = []
    fit_plain: list[npt.NDArray[np.float32]] = []
    fit_labels: list[str] = []
    for name, data in sets.items():
        identities = np.unique(data.labels)
        if populations.adapted(name):
            chosen = rng.permutation(identities)[: int(len(identities) * FIT_FRACTION)]
            fit = np.isin(data.labels, chosen)
        else:
            fit = np.zeros(len(data.labels), bool)
        rows = fit & ~np.isnan(data.raw[:, 0]) & usable[name]
        fit_raw.append(mirror_mean(data.raw[rows], data.raw_mirror[rows]))
        fit_plain.append(data.raw[rows])
        fit_labels += [f"{name}/{label}" for label in data.labels[rows]]
        test_rows[name] = ~fit
        fit_ids[name] = len(np.unique(data.labels[fit]))
        test_ids[name] = len(identities) - fit_ids[name]
    return Split(
        test_rows,
        fit_ids,
        test_ids,
        np.concatenate(fit_raw),
        np.concatenate(fit_plain),
        fit_labels,
    )
