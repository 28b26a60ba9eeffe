"""Accuracy per start attempt: FNMR at FMR per face set with K = 1, 2, 3 enrolment templates,
for each matching configuration measured on its own.

The protocol is `jifang eval attempts` (calibration/attempts.py): for each K, every person
with more than K units enrols K of them in rotation, each remaining unit is a genuine attempt
against his templates, every unit an impostor attempt against everyone else's; matching is
models.matching, the cab gate's code. Every set is reported on its own, East Asian sets
first.

Configurations (`by_config`):
- `open`: the open default pack, one chip per face (what `jifang eval attempts --pack
  jifang-open` reports; its "sets" are also written at the top level, `by_templates`);
- `mirror`: the same pack with the mirrored recognizer (each chip and its mirror image,
  averaged; what `jifang train adapter --mirror` builds on); nothing learned;
- `mirror_asnorm`: the mirrored pack with AS-norm (models.matching.ScoreNorm, top 20, fixed
  in advance): the cohort of a claim is the other enrolled people of that rotation plus
  a distractor half of cjk_singletons (one photo per person).

Strangers: the other half of cjk_singletons (STRANGERS people, none in any cohort) attempt
every enrolled person in every rotation. Each configuration reports `stranger_fmr` at the
enrolled-impostor threshold, and `fnmr_at_fmr_both`: FNMR at the threshold that keeps both
false-match rates at or below f (the figure a site can rely on, since an uncertified
person is often not enrolled at all).

Split: nothing is fitted on any face set, so every identity of every set is a test
identity; cjk_singletons is split by person (seeded) into the distractor cohort and the
strangers, disjoint. Writes bench/results/attempts.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, default_pack, halves_by_person, mirrored_pack, write_result

from calibration.attempts import set_attempts, set_units
from calibration.datasets import find_sets
from models.engine import FaceEngine
from models.matching import DEFAULT_TOP, ScoreNorm

FACES = REPO.parent / "shared" / "data" / "faces"
EAST_ASIAN = r"casia|east_asian|cjk"
SINGLETONS = "cjk_singletons"
STRANGERS = 300
"""Stranger probes drawn from the singleton half that is not the cohort (time bound)."""
SEED = 20261207
PROTOCOL = (
    "per set; K rotating templates per person with more than K units; other units genuine "
    "attempts, every unit an impostor attempt against each other person; models.matching "
    "(frame fusion, best-of-K template score, optional AS-norm); rate null below 3/FMR "
    "impostor attempts"
)


def main(argv: list[str] | None = None) -> int:
    """Evaluate every set for each configuration and K, and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES, help="folder of face sets")
    parser.add_argument("--max-templates", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.faces.is_dir():
        print(f"no face sets at {args.faces}; nothing to evaluate")
        return 1
    sets = find_sets(args.faces)
    sets.sort(key=lambda s: (not re.search(EAST_ASIAN, s.name), s.name))
    singletons = next((s for s in sets if s.name == SINGLETONS), None)
    if singletons is None:
        print(f"no {SINGLETONS} set under {args.faces}: no cohort and no strangers")
        return 1
    base = default_pack()
    ks = range(1, args.max_templates + 1)
    with tempfile.TemporaryDirectory() as work:
        mirrored = mirrored_pack(base, Path(work))
        engines = {"open": FaceEngine(base, threads=2), "mirror": FaceEngine(mirrored, threads=2)}
        by_config: dict[str, dict[str, dict[str, Any]]] = {}
        for name, engine in engines.items():
            people = set_units(engine, singletons, progress=False)
            cohort_half, stranger_half = halves_by_person(len(people), SEED)
            cohort = np.stack([people[i].embedding for i in cohort_half])
            strangers = np.stack([people[i].embedding for i in stranger_half[:STRANGERS]])
            norms: dict[str, ScoreNorm | None] = {name: None}
            if name == "mirror":
                norms["mirror_asnorm"] = ScoreNorm(cohort, DEFAULT_TOP)
            for config in norms:
                by_config[config] = {str(k): {} for k in ks}
            for face_set in sets:
                if face_set.name == SINGLETONS:
                    continue
                units = set_units(engine, face_set, progress=False)
                for config, norm in norms.items():
                    for k in ks:
                        record = set_attempts(units, k, norm, strangers)
                        by_config[config][str(k)][face_set.name] = record
                    print(
                        f"{config:14s} {face_set.name}: FNMR@1e-3 "
                        + _row(by_config[config], face_set.name, ks),
                        flush=True,
                    )
    figures = {
        "protocol": PROTOCOL,
        "pack": engines["open"].manifest.name,
        "split": (
            "nothing fitted on any face set: every identity is a test identity; "
            f"{SINGLETONS} split by person (seed {SEED}) into the AS-norm distractor cohort "
            f"(half) and up to {STRANGERS} strangers (the other half), disjoint"
        ),
        "by_templates": {k: {"sets": v} for k, v in by_config["open"].items()},
        "by_config": {
            config: {k: {"sets": v} for k, v in rows.items()} for config, rows in by_config.items()
        },
    }
    write_result("attempts", figures)
    return 0


def _row(rows: dict[str, dict[str, Any]], name: str, ks: range) -> str:
    def pct(value: float | None) -> str:
        return "null" if value is None else f"{100 * value:.1f}%"

    return ", ".join(
        f"K={k} {pct(rows[str(k)][name]['fnmr_at_fmr']['1e-3'])} "
        f"(both {pct(rows[str(k)][name]['fnmr_at_fmr_both']['1e-3'])})"
        for k in ks
    )


if __name__ == "__main__":
    sys.exit(main())
