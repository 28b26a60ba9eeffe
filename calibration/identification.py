"""`jifang calibrate identification`: 1:N search in NIST FRTE terms at a calibration's
threshold, written into the calibration so the gate's 1:N risk bound uses what was measured.

Gallery: every person of DATA's sets with two or more units enrols his first unit (as a
certificate photo would be); faces of STRANGERS (people in none of DATA's sets, one unit
each) fill the gallery up to `operators`, one photo each. The rest of STRANGERS search as
non-mated probes; every other unit of an enrolled person is a mated probe.

Each search is scored as the gate scores it: `models.matching.Scorer` on the calibration's
scale (raw cosine, or AS-norm with the pack's cohort) and the gate's 1:N rule
(`models.matching.identification`: the best operator clears the threshold and leads the
second by `min_margin`). FPIR: the share of non-mated searches that end identified as
anyone, with its one-sided 95% Clopper-Pearson upper bound. FNIR: the share of mated
searches that do not end identified as the right operator.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.attempts import Unit, set_units, stranger_embeddings
from calibration.datasets import find_sets
from calibration.metrics import clopper_pearson
from models.engine import FaceEngine
from models.gallery import Gallery
from models.manifest import Calibration, IdentificationPoint
from models.matching import Identification, Scorer, identification

UPPER_LEVEL = 0.90
"""Two-sided level whose upper end is the one-sided 95% bound."""


@dataclass(frozen=True)
class Searches:
    """A gallery and the searches against it."""

    gallery: Gallery
    mated: list[tuple[str, npt.NDArray[np.float32]]]
    """(enrolled operator, probe)."""
    non_mated: npt.NDArray[np.float32]


def build_searches(
    units: list[Unit], strangers: npt.NDArray[np.float32], operators: int
) -> Searches:
    """The gallery (enrolled people, then strangers up to `operators`) and the searches."""
    by_person: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        by_person[unit.person].append(unit)
    enrolled = sorted(p for p, own in by_person.items() if len(own) >= 2)
    if not enrolled:
        raise ValueError("no person has two or more usable units: no mated search")
    if len(enrolled) > operators:
        raise ValueError(f"--operators {operators}: DATA already enrols {len(enrolled)} people")
    fillers = operators - len(enrolled)
    if len(strangers) <= fillers:
        raise ValueError(
            f"{len(strangers)} strangers cannot fill {fillers} gallery places and leave "
            "any for non-mated searches"
        )
    gallery = Gallery(strangers.shape[1])
    mated: list[tuple[str, npt.NDArray[np.float32]]] = []
    for person in enrolled:
        first, *others = by_person[person]
        gallery.add(person, first.embedding)
        mated += [(person, u.embedding) for u in others]
    for i in range(fillers):
        gallery.add(f"stranger-{i:05d}", strangers[i])
    return Searches(gallery, mated, strangers[fillers:])


def measure(
    searches: Searches, scorer: Scorer, threshold: float, min_margin: float
) -> IdentificationPoint:
    """FPIR (with its upper bound) and FNIR of the searches under the gate's rule."""

    def outcome(probe: npt.NDArray[np.float32]) -> tuple[Identification, str | None]:
        result = scorer.search(searches.gallery, probe, k=2)
        best = result.best
        return identification(result, threshold, min_margin), best.label if best else None

    missed = 0
    for person, probe in searches.mated:
        found, label = outcome(probe)
        missed += found != Identification.IDENTIFIED or label != person
    false_positives = sum(
        outcome(probe)[0] == Identification.IDENTIFIED for probe in searches.non_mated
    )
    n = len(searches.non_mated)
    return IdentificationPoint(
        operators=len(searches.gallery.labels),
        templates=len(searches.gallery),
        min_margin=min_margin,
        mated_searches=len(searches.mated),
        non_mated_searches=n,
        false_positives=int(false_positives),
        fpir=false_positives / n,
        fpir_upper=clopper_pearson(int(false_positives), n, UPPER_LEVEL)[1],
        fnir=missed / len(searches.mated) if searches.mated else None,
        created=datetime.now(UTC).date(),
    )


def calibrate_identification(
    engine: FaceEngine,
    calibration: Calibration,
    scorer: Scorer,
    data: Path,
    strangers: Path,
    operators: int,
    min_margin: float,
    progress: bool = True,
) -> IdentificationPoint:
    """Measure 1:N at the calibration's threshold on DATA and STRANGERS (see module)."""
    units = [u for s in find_sets(data) for u in set_units(engine, s, progress)]
    outsiders = stranger_embeddings(engine, strangers, progress)
    searches = build_searches(units, outsiders, operators)
    point = measure(searches, scorer, calibration.threshold, min_margin)
    return point.model_copy(
        update={
            "data": f"{data}: {len(units)} units; strangers {strangers}: {len(outsiders)} faces"
        }
    )
