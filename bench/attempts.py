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

- `site`: the pack a site builds, `jifang train adapter --pack jifang-open --data FIT
  --out site --mirror` with no further flags (mirrored recognizer, WCCN adapter with
  shrinkages selected inside FIT, distractor cohort of one face per person of FIT, so its
  scores are AS-norm). FIT is the fit half of the people of every East Asian set; the pack
  is evaluated on the test half (and on the whole Western sets, where nothing is fitted),
  in two folds with the halves swapped. `open@test` and `mirror_asnorm@test` are the same
  configurations as above on the same test halves, the peers of `site` in each fold.

Strangers: the other half of cjk_singletons (STRANGERS people, none in any cohort) attempt
every enrolled person in every rotation. Each configuration reports `stranger_fmr` at the
enrolled-impostor threshold, and `fnmr_at_fmr_both`: FNMR at the threshold that keeps both
false-match rates at or below f (the figure a site can rely on, since an uncertified
person is often not enrolled at all).

Split: `open`, `mirror` and `mirror_asnorm` fit nothing on any face set, so every identity
of every set is a test identity; cjk_singletons is split by person (seeded) into the
distractor cohort and the strangers, disjoint. `site`: every East Asian set is split by
person (seeded) into halves A and B; fold 1 fits on A (cjk_singletons' A is the cohort
half above) and tests on B, strangers from cjk_singletons' B; fold 2 the other way round.
Figures of `site` and its `@test` peers pool the two folds' attempts (each fold's pack
scores only its own test people, so every test person is scored once per rotation; each
fold's own record is kept under `folds`): a test half of casia_ea_dev alone has too few
impostor attempts for FMR 1e-3. Writes bench/results/attempts.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import REPO, default_pack, halves_by_person, mirrored_pack, write_result

from calibration.attempts import (
    Unit,
    attempt_record,
    attempt_scores,
    set_attempts,
    set_norm,
    set_units,
    stranger_embeddings,
)
from calibration.datasets import FaceSet, find_sets
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
        embedded: dict[str, dict[str, list[Unit]]] = {name: {} for name in engines}
        for name, engine in engines.items():
            people = set_units(engine, singletons, progress=False)
            embedded[name][SINGLETONS] = people
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
                embedded[name][face_set.name] = units
                for config, norm in norms.items():
                    for k in ks:
                        record = set_attempts(units, k, norm, strangers)
                        by_config[config][str(k)][face_set.name] = record
                    print(
                        f"{config:14s} {face_set.name}: FNMR@1e-3 "
                        + _row(by_config[config], face_set.name, ks),
                        flush=True,
                    )
        site = site_folds(sets, singletons, base, embedded, Path(work), ks)
        by_config.update(site)
    figures = {
        "protocol": PROTOCOL,
        "pack": engines["open"].manifest.name,
        "split": (
            "open, mirror, mirror_asnorm: nothing fitted on any face set, every identity is a "
            f"test identity; {SINGLETONS} split by person (seed {SEED}) into the AS-norm "
            f"distractor cohort (half) and up to {STRANGERS} strangers (the other half), "
            "disjoint. site (and its @test peers): every East Asian set split by person "
            f"(seed {SEED}) into halves; the pack is built from one half of every East Asian "
            "set (jifang train adapter --mirror, every choice inside that half) and tested "
            "on the other half of each set and on the whole Western sets, strangers from "
            f"the other half of {SINGLETONS}; two folds, halves swapped; attempts of both folds pooled"
        ),
        "by_templates": {k: {"sets": v} for k, v in by_config["open"].items()},
        "by_config": {
            config: {k: {"sets": v} for k, v in rows.items()} for config, rows in by_config.items()
        },
    }
    write_result("attempts", figures)
    return 0


def _person_halves(units: list[Unit], seed: int) -> tuple[set[str], set[str]]:
    people = sorted({u.person for u in units})
    first, second = halves_by_person(len(people), seed)
    return {people[i] for i in first}, {people[i] for i in second}


def _link_people(source: Path, people: set[str], target: Path) -> None:
    """`target/<person>` links to `source/<person>` for each person."""
    target.mkdir(parents=True)
    for person in sorted(people):
        (target / person).symlink_to((source / person).resolve(), target_is_directory=True)


def _link_files(paths: list[Path], target: Path) -> None:
    """One identity folder per singleton photo: `target/<person>/<photo>`."""
    for path in paths:
        folder = target / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())


Scores = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _pooled_record(folds: list[Scores], templates: int, score: str) -> dict[str, Any]:
    """The record of the folds' attempts pooled (each fold's pack scored its own test
    people, so no attempt is counted twice), with each fold's own record kept."""

    def record(genuine: Any, impostor: Any, stranger: Any) -> dict[str, Any]:
        return {
            "templates": templates,
            "score": score,
            **attempt_record(genuine, impostor, stranger),
        }

    pooled = [np.concatenate([f[i] for f in folds]) for i in range(3)]
    return {**record(*pooled), "folds": [record(*f) for f in folds]}


def site_folds(
    sets: list[FaceSet],
    singletons: FaceSet,
    base: Path,
    embedded: dict[str, dict[str, list[Unit]]],
    work: Path,
    ks: range,
) -> dict[str, dict[str, dict[str, Any]]]:
    """`site`, `open@test` and `mirror_asnorm@test`: two folds of a site pack built by the
    command from one half of the East Asian people, tested on the other half. `embedded`:
    the units of every set under the `open` and `mirror` packs (the peers)."""
    from jifang.cli import app

    east = [s for s in sets if re.search(EAST_ASIAN, s.name) and s.name != SINGLETONS]
    western = [s for s in sets if not re.search(EAST_ASIAN, s.name)]
    # The peers' embeddings, and each East Asian set's halves by person.
    peer_units = embedded
    halves = {s.name: _person_halves(peer_units["open"][s.name], SEED) for s in east}
    # The singletons' halves by person, as the main loop cuts them (cohort half A).
    singles = {name: units[SINGLETONS] for name, units in embedded.items()}
    order = [u.person for u in singles["mirror"]]
    single_a, single_b = ({order[i] for i in half} for half in halves_by_person(len(order), SEED))
    photos = dict(zip(singletons.labels, singletons.images, strict=True))
    runs: dict[str, dict[str, dict[str, list[Scores]]]] = {
        c: {str(k): {} for k in ks} for c in ("site", "open@test", "mirror_asnorm@test")
    }
    for fold, (fit, test) in enumerate(((0, 1), (1, 0))):
        root = work / f"fold{fold + 1}"
        single_fit = sorted((single_a, single_b)[fit])
        single_test = set(sorted((single_a, single_b)[test])[:STRANGERS])
        for s in east:
            _link_people(s.root, halves[s.name][fit], root / "fit" / s.name)
            _link_people(s.root, halves[s.name][test], root / "test" / s.name)
        _link_files([photos[p] for p in single_fit], root / "fit" / SINGLETONS)
        _link_files([photos[p] for p in sorted(single_test)], root / "strangers" / SINGLETONS)
        app(
            ["train", "adapter", "--pack", str(base), "--data", str(root / "fit"),
             "--out", "site", "--mirror", "--model-dir", str(root)],
            standalone_mode=False,
        )  # fmt: skip
        engine = FaceEngine(root / "site", threads=2)
        strangers = stranger_embeddings(engine, root / "strangers", progress=False)
        tested = {s.name: set_units(engine, s, progress=False) for s in find_sets(root / "test")}
        tested.update({s.name: set_units(engine, s, progress=False) for s in western})
        # Peers on the same test people; the AS-norm peer's cohort is the fit singletons.
        fit_names = set(single_fit)
        cohort = np.stack([u.embedding for u in singles["mirror"] if u.person in fit_names])
        peer_strangers = {
            name: np.stack([u.embedding for u in singles[name] if u.person in single_test])
            for name in ("open", "mirror")
        }
        for k in ks:
            for name, units in tested.items():
                norm, _ = set_norm(engine.cohort, name, units)
                runs["site"][str(k)].setdefault(name, []).append(
                    attempt_scores(units, k, norm, strangers)
                )
            for s in east:
                keep = halves[s.name][test]
                for config, peer, norm in (
                    ("open@test", "open", None),
                    ("mirror_asnorm@test", "mirror", ScoreNorm(cohort, DEFAULT_TOP)),
                ):
                    units = [u for u in peer_units[peer][s.name] if u.person in keep]
                    runs[config][str(k)].setdefault(s.name, []).append(
                        attempt_scores(units, k, norm, peer_strangers[peer])
                    )
        for config in runs:
            for name in runs[config]["1"]:
                print(
                    f"{config:18s} fold {fold + 1} {name}: FNMR@1e-3 "
                    + ", ".join(
                        f"K={k} "
                        + _pct(
                            attempt_record(*runs[config][str(k)][name][-1])["fnmr_at_fmr"]["1e-3"]
                        )
                        for k in ks
                    ),
                    flush=True,
                )
    return {
        config: {
            k: {
                name: _pooled_record(
                    folds, int(k), "cosine" if config == "open@test" else "as_norm"
                )
                for name, folds in rows.items()
            }
            for k, rows in by_k.items()
        }
        for config, by_k in runs.items()
    }


def _pct(value: float | None) -> str:
    return "null" if value is None else f"{100 * value:.1f}%"


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
