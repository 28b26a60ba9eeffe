"""1:N identification in NIST FRTE terms: FPIR and FNIR for a site gallery of 200 operators.

Gallery: every person of the East Asian sets with two or more units (casia_ea_dev,
lfw_east_asian28_gray) enrols his first unit (as a certificate photo would be, K = 1),
and people of one half of cjk_singletons (split by person, seeded) fill the gallery up to
GALLERY operators, one photo each.

Searches, scored by the gate's rule (models.gallery search, models.matching.identification:
the best operator clears the threshold and leads the second by gate.min_margin):
- mated: every other unit of an enrolled East Asian person. FNIR is the share that does not
  end identified as the right operator (below threshold, ambiguous, or someone else);
- non-mated: the other half of cjk_singletons, none of them in the gallery. FPIR is the
  share that ends identified as anyone.

Threshold: the gate's, i.e. the one `jifang calibrate` sets at the per-comparison target FMR
(1e-3 by default): here from the impostor pairs among the gallery's own photos (one per
operator), the site's calibration material. Each pack is searched under the gate's margin
(`margin_<m>`, gate.min_margin) and with no margin (`margin_0`), and FNIR is split by cause
(below threshold, ambiguous, wrong operator). The result also gives the risk the gate's 1:N
bound estimates today (FMR x templates in the gallery), to set beside the measured FPIR.

Packs: the open default pack, and the same with the mirrored recognizer. Nothing is fitted,
so every identity is a test identity. Writes bench/results/identification.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, default_pack, halves_by_person, mirrored_pack, write_result

from calibration.attempts import Unit, set_units
from calibration.datasets import find_sets
from calibration.metrics import supports, threshold_at_fmr
from edge_agent.config import GateSection
from models.engine import FaceEngine
from models.gallery import Gallery
from models.matching import Identification, identification

FACES = REPO.parent / "shared" / "data" / "faces"
MATED_SETS = ("casia_ea_dev", "lfw_east_asian28_gray")
SINGLETONS = "cjk_singletons"
GALLERY = 200
TARGET_FMR = 1e-3
SEED = 20261207


def evaluate(engine: FaceEngine, sets: dict[str, Any], min_margin: float) -> dict[str, Any]:
    """FPIR, FNIR and their counts for one pack."""
    mated: list[list[Unit]] = []
    for name in MATED_SETS:
        by_person: dict[str, list[Unit]] = {}
        for unit in set_units(engine, sets[name], progress=False):
            by_person.setdefault(f"{name}/{unit.person}", []).append(unit)
        mated += [own for own in by_person.values() if len(own) >= 2]
    singles = set_units(engine, sets[SINGLETONS], progress=False)
    filler_half, search_half = halves_by_person(len(singles), SEED)
    fillers = [singles[i] for i in filler_half][: max(0, GALLERY - len(mated))]
    non_mated = [singles[i] for i in search_half]
    gallery = Gallery(engine.manifest.embedding.dim)
    photos: list[np.ndarray] = []
    for own in mated:
        gallery.add(own[0].person, own[0].embedding)
        photos.append(own[0].embedding)
    for unit in fillers:
        gallery.add(f"{SINGLETONS}/{unit.person}", unit.embedding)
        photos.append(unit.embedding)
    stack = np.stack(photos).astype(np.float64)
    impostor = np.array([stack[i] @ stack[j] for i, j in combinations(range(len(stack)), 2)])
    if not supports(impostor.size, TARGET_FMR):
        raise ValueError(f"{impostor.size} impostor pairs cannot support FMR {TARGET_FMR}")
    threshold = threshold_at_fmr(impostor, TARGET_FMR)
    rows = {
        f"margin_{margin:g}": _searches(gallery, mated, non_mated, threshold, margin)
        for margin in sorted({min_margin, 0.0}, reverse=True)
    }
    return {
        "threshold": threshold,
        "fmr_per_comparison": TARGET_FMR,
        "gallery_operators": len(gallery.labels),
        "gallery_templates": len(gallery),
        "mated_operators": len(mated),
        "bound_estimate": TARGET_FMR * len(gallery),
        "gate_margin": min_margin,
        **rows,
    }


def _searches(
    gallery: Gallery,
    mated: list[list[Unit]],
    non_mated: list[Unit],
    threshold: float,
    margin: float,
) -> dict[str, Any]:
    """FNIR (with why each mated search failed) and FPIR under one margin."""
    failed = {"below_threshold": 0, "ambiguous": 0, "wrong_operator": 0}
    searches = 0
    for own in mated:
        for unit in own[1:]:
            result = gallery.search(unit.embedding, k=2)
            outcome = identification(result, threshold, margin)
            best = result.best
            searches += 1
            if outcome == Identification.IDENTIFIED:
                if best is None or best.label != own[0].person:
                    failed["wrong_operator"] += 1
            elif outcome == Identification.AMBIGUOUS:
                failed["ambiguous"] += 1
            else:
                failed["below_threshold"] += 1
    false_positives = sum(
        identification(gallery.search(u.embedding, k=2), threshold, margin)
        == Identification.IDENTIFIED
        for u in non_mated
    )
    return {
        "mated_searches": searches,
        "fnir": sum(failed.values()) / searches,
        "fnir_causes": failed,
        "non_mated_searches": len(non_mated),
        "fpir": false_positives / len(non_mated),
        "false_positives": int(false_positives),
    }


def main(argv: list[str] | None = None) -> int:
    """Evaluate both packs and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES, help="folder of face sets")
    args = parser.parse_args(argv)
    sets = {s.name: s for s in find_sets(args.faces)} if args.faces.is_dir() else {}
    missing = [n for n in (*MATED_SETS, SINGLETONS) if n not in sets]
    if missing:
        print(f"face sets missing under {args.faces}: {', '.join(missing)}")
        return 1
    min_margin = GateSection().min_margin
    base = default_pack()
    figures: dict[str, Any] = {
        "protocol": (
            f"gallery of {GALLERY} operators, one photo each ({', '.join(MATED_SETS)} people "
            f"with 2+ units enrol their first, {SINGLETONS} fill the rest); mated searches: "
            "their other units; non-mated: people in no gallery; the gate's rule (threshold "
            f"at per-comparison FMR {TARGET_FMR} on the gallery photos' impostor pairs, "
            f"margin {min_margin}); FNIR counts a wrong or refused mated search"
        ),
        "split": (
            f"nothing fitted; {SINGLETONS} split by person (seed {SEED}): gallery fillers "
            "from one half, non-mated searches from the other"
        ),
        "packs": {},
    }
    with tempfile.TemporaryDirectory() as work:
        mirrored = mirrored_pack(base, Path(work))
        for name, pack in (("open", base), ("mirror", mirrored)):
            row = evaluate(FaceEngine(pack, threads=2), sets, min_margin)
            figures["packs"][name] = row
            for key, searched in row.items():
                if key.startswith("margin_"):
                    print(
                        f"{name} {key}: FPIR {100 * searched['fpir']:.2f}% of "
                        f"{searched['non_mated_searches']}, FNIR {100 * searched['fnir']:.1f}% "
                        f"of {searched['mated_searches']} {searched['fnir_causes']}; bound "
                        f"estimate {row['bound_estimate']:.2f}, threshold {row['threshold']:.3f}",
                        flush=True,
                    )
    write_result("identification", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
