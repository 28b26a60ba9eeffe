"""`jifang eval attempts`: how often the cab would refuse the right operator at a start, and
how often it would accept someone else, per set, with K enrolment templates per person.

Units. In a set (`<set>/<identity>/<image>`), each image is one unit; a sub-folder of an
identity folder holding images is a sequence, and its frames make one unit (their
embeddings fused as the gate fuses the frames of a start).

Protocol, for K templates:
- rotation r = 0, 1, ... up to the largest number of units a person has: every person with
  more than K units enrols units r, r+1, ..., r+K-1 (modulo his count) as templates; this
  is one site's gallery;
- every other unit of an enrolled person is a genuine attempt against his own templates;
- every unit of every person (enrolled or not, K or fewer units too) is an impostor attempt
  against each other enrolled person's templates.
Each attempt is scored by `models.matching` (frame fusion, template fusion and, when the
pack carries a cohort, AS-norm against the other enrolled people and the cohort), the code
the cab gate runs. FNMR at FMR f is the share of genuine attempts below the threshold at which
a share f of the impostor attempts score at or above it; it is null where the impostor
attempts cannot support f (fewer than 3 / f: the rule of three).

Strangers (optional): faces of people in no gallery, one unit each, attempt every enrolled
person in every rotation. An uncertified person is often not enrolled at all, and a
normalised score can treat him differently from an enrolled impostor, so their false-match
rate is reported at the same threshold, with the FNMR at the threshold that holds both.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.datasets import IMAGE_SUFFIXES, EmbeddedSet, FaceSet, embed_set, find_sets
from calibration.metrics import fmr_key, rates_at, supports, threshold_at_fmr
from contract.codes import ScoreKind
from models.engine import FaceEngine
from models.matching import Cohort, ScoreNorm, fuse_embeddings, template_scores

FMRS = (1e-2, 1e-3, 1e-4)
"""The false-match rates each set is reported at."""
MAX_TEMPLATES = 10
"""The largest K accepted (a site enrols a handful)."""
FloatRows = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Unit:
    """One image, or one sequence of frames, of a person: one probe or one template."""

    person: str
    key: str
    embedding: npt.NDArray[np.float32]


def with_sequences(face_set: FaceSet) -> FaceSet:
    """The set with the frames of each identity's sequence folders added."""
    images = list(face_set.images)
    labels = list(face_set.labels)
    for identity in sorted(p for p in face_set.root.iterdir() if p.is_dir()):
        for sequence in sorted(p for p in identity.iterdir() if p.is_dir()):
            for frame in sorted(sequence.iterdir()):
                if frame.is_file() and frame.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(frame)
                    labels.append(identity.name)
    return FaceSet(face_set.name, face_set.root, tuple(images), tuple(labels))


def units_of(embedded: EmbeddedSet, root: Path) -> list[Unit]:
    """One unit per image, or per sequence folder (its frames fused); images without a face
    are left out, as the gate would wait for another frame."""
    groups: dict[tuple[str, str], list[npt.NDArray[np.float32]]] = defaultdict(list)
    for vector, label, path in zip(
        embedded.embeddings, embedded.labels, embedded.paths, strict=True
    ):
        in_sequence = path.parent.parent.parent == root
        key = str(path.parent.relative_to(root) if in_sequence else path.relative_to(root))
        groups[label, key].append(vector)
    return [
        Unit(person, key, fuse_embeddings(vectors))
        for (person, key), vectors in sorted(groups.items())
    ]


def set_units(engine: FaceEngine, face_set: FaceSet, progress: bool = True) -> list[Unit]:
    """Every unit of a set, embedded by the pack (sequence frames fused)."""
    embedded = embed_set(engine, with_sequences(face_set), progress=progress)
    return units_of(embedded, face_set.root)


def attempt_scores(
    units: list[Unit],
    templates: int,
    norm: ScoreNorm | None = None,
    strangers: FloatRows | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Genuine, impostor and stranger attempt scores under the rotation protocol.

    With `norm`, every score is normalised against the claimed operator's cohort: the other
    enrolled people's templates of that rotation plus the distractors. `strangers` (unit
    embeddings of people in no gallery) are scored against every enrolled person in each
    rotation: the attacks of someone who was never enrolled.
    """
    by_person: dict[str, list[int]] = defaultdict(list)
    for index, unit in enumerate(units):
        by_person[unit.person].append(index)
    enrolled = sorted(p for p, own in by_person.items() if len(own) > templates)
    probes = np.stack([u.embedding for u in units]) if units else np.zeros((0, 0), np.float32)
    owners = np.array([u.person for u in units])
    # Strangers are scored in the same call per claim as the units, after them.
    searched = probes if strangers is None else np.concatenate([probes, strangers])
    genuine: list[npt.NDArray[np.float64]] = []
    impostor: list[npt.NDArray[np.float64]] = []
    stranger: list[npt.NDArray[np.float64]] = []
    rotations = max((len(by_person[p]) for p in enrolled), default=0)
    for r in range(rotations):
        gallery: dict[str, npt.NDArray[np.float32]] = {}
        used = np.zeros(len(units), bool)
        for person in enrolled:
            own = by_person[person]
            chosen = sorted(own[(r + j) % len(own)] for j in range(templates))
            used[chosen] = True
            gallery[person] = probes[chosen]
        for claimed in enrolled:
            scores = _claim_scores(gallery, claimed, searched, norm)
            enrolled_scores, attacks = scores[: len(units)], scores[len(units) :]
            mine = owners == claimed
            genuine.append(enrolled_scores[mine & ~used])
            impostor.append(enrolled_scores[~mine])
            stranger.append(attacks)
    return _joined(genuine), _joined(impostor), _joined(stranger)


def _joined(parts: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, np.float64)


def _claim_scores(
    gallery: dict[str, npt.NDArray[np.float32]],
    claimed: str,
    probes: FloatRows,
    norm: ScoreNorm | None,
) -> npt.NDArray[np.float64]:
    """Each probe's score under a 1:1 claim of `claimed`, as the gate scores it."""
    stack = gallery[claimed]
    if norm is None:
        return template_scores(stack, probes)
    others = [t for person, t in gallery.items() if person != claimed]
    cohort = norm.cohort(np.concatenate(others) if others else None)
    return norm.scores(stack, probes, cohort)


def set_attempts(
    units: list[Unit],
    templates: int,
    norm: ScoreNorm | None = None,
    strangers: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """The record of one set at K templates.

    With `strangers`, the record adds `stranger_fmr` (the strangers' false-match rate at
    each threshold) and `fnmr_at_fmr_both` (FNMR at the threshold that keeps both the
    enrolled impostors' and the strangers' false-match rate at or below f).
    """
    genuine, impostor, stranger = attempt_scores(units, templates, norm, strangers)
    record = attempt_record(genuine, impostor, stranger if strangers is not None else None)
    return {
        "templates": templates,
        **record,
        "people": len({u.person for u in units}),
        "units": len(units),
    }


def attempt_record(
    genuine: npt.NDArray[np.float64],
    impostor: npt.NDArray[np.float64],
    stranger: npt.NDArray[np.float64] | None = None,
) -> dict[str, Any]:
    """FNMR at each FMR of a set's attempt scores (see `set_attempts`); with `stranger`
    scores, the strangers' false-match rate and the FNMR that holds both rates."""
    fnmr: dict[str, float | None] = {}
    supported: dict[str, bool] = {}
    stranger_fmr: dict[str, float | None] = {}
    both: dict[str, float | None] = {}
    for fmr in FMRS:
        key = fmr_key(fmr)
        supported[key] = bool(genuine.size) and supports(impostor.size, fmr)
        threshold = threshold_at_fmr(impostor, fmr) if supported[key] else None
        fnmr[key] = rates_at(genuine, impostor, threshold)[0] if threshold is not None else None
        if stranger is None:
            continue
        stranger_fmr[key] = None
        both[key] = None
        if threshold is not None and stranger.size:
            stranger_fmr[key] = float(np.mean(stranger >= threshold))
            if supports(stranger.size, fmr):
                held = max(threshold, threshold_at_fmr(stranger, fmr))
                both[key] = rates_at(genuine, impostor, held)[0]
    extra: dict[str, Any] = {}
    if stranger is not None:
        extra = {
            "stranger_attempts": int(stranger.size),
            "stranger_fmr": stranger_fmr,
            "fnmr_at_fmr_both": both,
        }
    return {
        "fnmr_at_fmr": fnmr,
        "genuine_attempts": int(genuine.size),
        "impostor_attempts": int(impostor.size),
        "supported": supported,
        **extra,
    }


def stranger_embeddings(engine: FaceEngine, folder: Path, progress: bool = True) -> FloatRows:
    """One embedding per unit of every set under `folder`: people enrolled nowhere."""
    units = [u for face_set in find_sets(folder) for u in set_units(engine, face_set, progress)]
    if not units:
        raise ValueError(f"--strangers {folder}: no face found in any image")
    return np.stack([u.embedding for u in units])


def set_norm(
    cohort: Cohort | None, set_name: str, units: list[Unit]
) -> tuple[ScoreNorm | None, int]:
    """The normalisation the gate would use, without the cohort faces of the set's own
    people (nobody is his own distractor); also how many were left out."""
    if cohort is None:
        return None, 0
    return cohort.norm(f"{set_name}/{person}" for person in {u.person for u in units})


def evaluate_attempts(
    engine: FaceEngine,
    data: Path,
    templates: int,
    progress: bool = True,
    strangers: Path | None = None,
    normalise: bool = True,
) -> dict[str, Any]:
    """`{"pack": ..., "sets": {name: record}}` for every set under `data`, each on its own.

    Scores are AS-norm scores when the pack carries a cohort (as the gate's are under an
    as_norm calibration), unless `normalise` is off. With `strangers` (a set, or a folder
    of sets, of people in none of `data`'s sets), every record adds the strangers' figures
    (see `set_attempts`).
    """
    if not 1 <= templates <= MAX_TEMPLATES:
        raise ValueError(f"--templates {templates}: must be 1 to {MAX_TEMPLATES}")
    attackers = stranger_embeddings(engine, strangers, progress) if strangers else None
    cohort = engine.cohort if normalise else None
    sets: dict[str, Any] = {}
    for face_set in find_sets(data):
        units = set_units(engine, face_set, progress)
        norm, excluded = set_norm(cohort, face_set.name, units)
        record = set_attempts(units, templates, norm, strangers=attackers)
        record["score"] = (ScoreKind.COSINE if norm is None else ScoreKind.AS_NORM).value
        if norm is not None:
            record["cohort_faces"] = len(norm.distractors)
            record["cohort_excluded"] = excluded
        sets[face_set.name] = record
    if not any(record["genuine_attempts"] for record in sets.values()):
        raise ValueError(
            f"{data}: no person has more than {templates} usable images or sequences, so no "
            "genuine attempt can be made"
        )
    return {"pack": engine.manifest.name, "contract_id": engine.contract_id, "sets": sets}
