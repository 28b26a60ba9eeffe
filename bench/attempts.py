"""Accuracy per start attempt: FNMR at FMR per face set with K = 1, 2, 3 enrolment templates.

The protocol is `jifang eval attempts` (calibration/attempts.py): for each K, every person
with more than K units enrols K of them in rotation, each remaining unit is a genuine attempt
against his templates, every unit an impostor attempt against everyone else's; matching is
models.matching, the cab gate's code. Every set is reported on its own, East Asian sets
first. Pack: the open default pack; nothing is fitted, so every identity is a test identity
(split: none needed). Writes bench/results/attempts.json: {"protocol", "pack", "split", "by_templates": {K:
{"sets": ...}}}, each "sets" as `jifang eval attempts --templates K --json` writes it.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from _common import REPO, default_pack, write_result

from calibration.attempts import set_attempts, set_units
from calibration.datasets import find_sets
from models.engine import FaceEngine

FACES = REPO.parent / "shared" / "data" / "faces"
EAST_ASIAN = r"casia|east_asian|cjk"
PROTOCOL = (
    "per set; K rotating templates per person with more than K units; other units genuine "
    "attempts, every unit an impostor attempt against each other person; models.matching "
    "(frame fusion, best-of-K template score); rate null below 3/FMR impostor attempts"
)


def main(argv: list[str] | None = None) -> int:
    """Evaluate every set for each K and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES, help="folder of face sets")
    parser.add_argument("--max-templates", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.faces.is_dir():
        print(f"no face sets at {args.faces}; nothing to evaluate")
        return 1
    engine = FaceEngine(default_pack(), threads=2)
    sets = find_sets(args.faces)
    sets.sort(key=lambda s: (not re.search(EAST_ASIAN, s.name), s.name))
    ks = range(1, args.max_templates + 1)
    by_k: dict[str, dict[str, Any]] = {str(k): {} for k in ks}
    for face_set in sets:
        units = set_units(engine, face_set, progress=False)
        for k in ks:
            by_k[str(k)][face_set.name] = set_attempts(units, k)
        row = ", ".join(f"K={k} {by_k[str(k)][face_set.name]['fnmr_at_fmr']['1e-3']}" for k in ks)
        print(f"{face_set.name}: FNMR@1e-3 {row}")
    figures = {
        "protocol": PROTOCOL,
        "pack": engine.manifest.name,
        "split": "nothing fitted: every identity is a test identity",
        "by_templates": {k: {"sets": v} for k, v in by_k.items()},
    }
    write_result("attempts", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
