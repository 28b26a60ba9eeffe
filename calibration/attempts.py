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
Each attempt is scored by `models.matching` (frame fusion, template fusion), the code the
cab gate runs. FNMR at FMR f is the share of genuine attempts below the threshold at which
a share f of the impostor attempts score at or above it; it is null where the impostor
attempts cannot support f (fewer than 3 / f: the rule of three).
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
from models.engine import FaceEngine
from models.matching import fuse_embeddings, template_score

FMRS = (1e-2, 1e-3, 1e-4)
"""The false-match rates each set is reported at."""
MAX_TEMPLATES = 10
"""The largest K accepted (a site enrols a handful)."""


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
    units: list[Unit], templates: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Genuine and impostor attempt scores under the rotation protocol."""
    by_person: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        by_person[unit.person].append(unit)
    enrolled = sorted(p for p, own in by_person.items() if len(own) > templates)
    genuine: list[float] = []
    impostor: list[float] = []
    rotations = max((len(by_person[p]) for p in enrolled), default=0)
    for r in range(rotations):
        gallery: dict[str, npt.NDArray[np.float32]] = {}
        used: dict[str, set[int]] = {}
        for person in enrolled:
            own = by_person[person]
            chosen = {(r + j) % len(own) for j in range(templates)}
            used[person] = chosen
            gallery[person] = np.stack([own[i].embedding for i in sorted(chosen)])
        for person, own in by_person.items():
            for i, unit in enumerate(own):
                for other, stack in gallery.items():
                    if other == person:
                        if i not in used[person]:
                            genuine.append(template_score(stack, unit.embedding))
                    else:
                        impostor.append(template_score(stack, unit.embedding))
    return np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)


def set_attempts(units: list[Unit], templates: int) -> dict[str, Any]:
    """The record of one set at K templates."""
    genuine, impostor = attempt_scores(units, templates)
    fnmr: dict[str, float | None] = {}
    supported: dict[str, bool] = {}
    for fmr in FMRS:
        key = fmr_key(fmr)
        supported[key] = bool(genuine.size) and supports(impostor.size, fmr)
        fnmr[key] = (
            rates_at(genuine, impostor, threshold_at_fmr(impostor, fmr))[0]
            if supported[key]
            else None
        )
    return {
        "templates": templates,
        "fnmr_at_fmr": fnmr,
        "genuine_attempts": int(genuine.size),
        "impostor_attempts": int(impostor.size),
        "supported": supported,
        "people": len({u.person for u in units}),
        "units": len(units),
    }


def evaluate_attempts(
    engine: FaceEngine, data: Path, templates: int, progress: bool = True
) -> dict[str, Any]:
    """`{"pack": ..., "sets": {name: record}}` for every set under `data`, each on its own."""
    if not 1 <= templates <= MAX_TEMPLATES:
        raise ValueError(f"--templates {templates}: must be 1 to {MAX_TEMPLATES}")
    sets: dict[str, Any] = {}
    for face_set in find_sets(data):
        sets[face_set.name] = set_attempts(set_units(engine, face_set, progress), templates)
    if not any(record["genuine_attempts"] for record in sets.values()):
        raise ValueError(
            f"{data}: no person has more than {templates} usable images or sequences, so no "
            "genuine attempt can be made"
        )
    return {"pack": engine.manifest.name, "contract_id": engine.contract_id, "sets": sets}
