"""Accuracy per population: the dlib reference against jifang's best configuration.

Every face set under the faces folder (default ../shared/data/faces, or --faces) is
evaluated on its own. Identities are split with a fixed seed, repeated REPEATS times (each
repeat draws a new split from the same seed sequence), and every figure is the mean over the
repeats with its standard deviation in bench/results/population_detail.json.

Populations: a set whose name matches --east-asian-pattern is East Asian; a set where every
identity has one image is a singleton set (between-person material only). Everything else
is Western.

- East Asian sets: half of the identities (floor) are fit identities, the rest test
  identities. The singleton set: half of the people are fit material, half test.
- jifang's configuration embeds each chip and its mirror image and averages the two unit
  descriptors (the pack's recognizer graph is wrapped to do so, training.adapt's
  `mirror_recognizer`); nothing is learned for that.
- The population adapter for Chinese operators is what `jifang train adapter`
  builds from the fit identities of the East Asian sets plus the fit half of the singletons:
  its two shrinkages are chosen by `select_config`, an identity-split cross-validation inside
  the fit identities, so the test identities play no part in any choice. It is exported to
  ONNX inside a real pack (mirrored recognizer + adapter) and applied through the same
  wrapper the edge engine loads.
- Western sets: jifang's configuration for a Western population is the mirrored pack
  without adapter (the adapter is per population, like the calibration); nothing is fitted
  on them, so every identity is a test identity. What the East Asian adapter would do to
  them is reported in the detail file (`ea_adapter`).

Image quality: a set may carry a QUALITY.tsv (path, flag, note) from whoever assembled it.
Images flagged `severe` there (less than about half of the face in the frame) are left out
of the pairs of both pipelines alike and out of the fit data; the figures on every image are
kept beside them in the detail file (`all_images`).

Scores: the dlib reference uses Euclidean distance of its descriptors (negated so higher
means more alike); jifang uses cosine of L2-normalised embeddings. FNMR@1e-3 is measured
at the threshold where at most 0.1 % of the test impostor pairs are accepted; where fewer
than 3,000 impostor pairs exist (rule of three) the figure rests on the top two or three
impostor scores and is flagged `supported: false` in the detail file.

The singleton set has no genuine pairs. Its row reports the East Asian operating point with
a large impostor population: the threshold at FMR 1e-3 is set on all pairs among the test
singletons (about 286,000), and FNMR is the rejection rate of the genuine pairs of the
test identities of the East Asian sets together at that threshold.

Multi-template enrollment and multi-frame fusion are measured on the test identities of
each set with several images per person (see `enrollment_figures`); they go to the detail
file.

The protocol (populations, quality exclusion, splits, pair scoring) is calibration.protocol.

Writes bench/results/population.json and bench/results/population_detail.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import RESULTS, SHARED_FACES, default_pack, mirrored_pack, model_dir, write_result
from _population_data import load_or_compute

from calibration.datasets import find_sets
from calibration.metrics import equal_error_rate, rates_at, supports, threshold_at_fmr
from calibration.protocol import (
    EAST_ASIAN_PATTERN,
    EXCLUDED_FLAG,
    FIT_FRACTION,
    FMR,
    QUALITY_FILE,
    Populations,
    ProtocolError,
    SetEmbeddings,
    Split,
    classify,
    cosine_pairs,
    euclidean_pairs,
    make_split,
    rates,
    usable_rows,
)
from models.engine import FaceEngine
from models.manifest import load_manifest
from models.runtime.adapter import LinearAdapter
from models.runtime.registry import build_component
from models.types import Task
from models.vectors import l2_normalize, mirror_mean
from training.adapt import (
    AdapterConfig,
    AdapterMethod,
    AdapterProvenance,
    LinearMap,
    SelectionError,
    build_adapted_pack,
    fit_adapter,
    select_config,
)

logger = logging.getLogger(__name__)

SEED = 20261129
REPEATS = 50
INNER_SPLITS = 3
"""Identity splits inside the fit identities that `select_config` averages over."""
ENROLL_POOL = 3
"""Images per test identity kept for enrollment; the rest are probes."""
MAX_FRAMES = 3
"""Most probe images fused into one attempt (a cab verification takes a few frames)."""
NO_MIRROR = "adapter_without_mirror"
FIXED_DEFAULTS = "fixed_defaults"
ALL = ("ea", "singletons")
VARIANTS: dict[str, tuple[AdapterConfig, tuple[str, ...]]] = {
    FIXED_DEFAULTS: (AdapterConfig(), ALL),
    NO_MIRROR: (AdapterConfig(), ALL),
    "wccn_ea_sets_only": (AdapterConfig(), ("ea",)),
    "whiten_singletons_only": (AdapterConfig(method=AdapterMethod.WHITEN), ("singletons",)),
    "center_only": (AdapterConfig(method=AdapterMethod.CENTER), ALL),
    "whiten_only": (AdapterConfig(method=AdapterMethod.WHITEN), ALL),
    "wccn_without_whitening": (AdapterConfig(whiten_shrinkage=1.0, shrinkage=0.5), ALL),
    "lda_64": (AdapterConfig(method=AdapterMethod.LDA, output_dim=64, shrinkage=0.5), ALL),
}
"""Alternatives to jifang's recipe, fitted on the same split (numpy reference of the graph):
which fitting data ("ea": fit identities of the East Asian sets, "singletons": the fit half
of the singleton set) and which transform. `fixed_defaults` is the adapter with
AdapterConfig's default shrinkages instead of selected ones. Reported so that what did not
help shows."""

Matrix = npt.NDArray[np.float64]
Embed = Callable[[npt.NDArray[np.float32]], Matrix]


def _fit_rows(
    split: Split, populations: Populations, sources: tuple[str, ...], mirror: bool = True
) -> tuple[npt.NDArray[np.float64], list[str]]:
    names = set(populations.east_asian) if "ea" in sources else set()
    if "singletons" in sources and populations.singletons:
        names.add(populations.singletons)
    keep = [i for i, label in enumerate(split.fit_labels) if label.split("/")[0] in names]
    rows = split.fit_raw if mirror else split.fit_plain.astype(np.float64)
    return rows[keep], [split.fit_labels[i] for i in keep]


def adapter_through_pack(linear: LinearMap, base: Path, work: Path, repeat: int) -> Embed:
    """Build the adapted pack (mirrored recognizer + adapter) and return its adapter (ONNX).

    The function takes what the pack's mirrored recognizer outputs (`mirror_mean` of the
    cached plain and mirror descriptors; tests/training check the graph matches it).
    """
    pack = build_adapted_pack(
        base,
        linear,
        work,
        f"jifang-open-ea-r{repeat}",
        AdapterProvenance(source=f"bench/population.py repeat {repeat}"),
        mirror=True,
    )
    entry = load_manifest(pack).file(Task.ADAPTER)
    assert entry is not None  # build_adapted_pack always adds it
    if repeat == 0:
        # The edge engine loads the adapted pack unchanged (verified checksums, contract id).
        FaceEngine(pack, threads=1)
    adapter = build_component(pack, entry, 1, LinearAdapter)

    def embed(mirrored: npt.NDArray[np.float32]) -> Matrix:
        return l2_normalize(adapter.transform(mirrored))

    return embed


def _mean_sd(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {"mean": float(np.nanmean(arr)), "sd": float(np.nanstd(arr))}


def enrollment_figures(
    vectors: Matrix,
    labels: npt.NDArray[np.str_],
    threshold: float,
    rng: np.random.Generator,
    outsiders: Matrix | None = None,
) -> dict[str, Any]:
    """What several enrollment templates and several probe frames buy, at a fixed threshold.

    Each test identity's images are shuffled; the first ENROLL_POOL are its enrollment pool,
    the rest probes. An attempt compares k templates (max score, or one template that is the
    mean of the k) with a probe made of N images fused by the mean of their normalised
    embeddings. Genuine: probes of the same identity; impostor: probes of every other test
    identity. The threshold is the single-image one at FMR 1e-3 from the pair protocol, as a
    deployed gate would use, so FNMR and FMR show what each step changes at that operating
    point; EER is threshold-free.
    """
    enroll: dict[str, Matrix] = {}
    probes: dict[str, Matrix] = {}
    for identity in np.unique(labels):
        rows = vectors[labels == identity]
        if len(rows) < ENROLL_POOL + 1:
            continue
        rows = rows[rng.permutation(len(rows))]
        enroll[identity], probes[identity] = rows[:ENROLL_POOL], rows[ENROLL_POOL:]
    out: dict[str, Any] = {}
    if len(enroll) < 2:
        return out
    max_frames = min(MAX_FRAMES, *(len(p) for p in probes.values()))
    for k in range(1, ENROLL_POOL + 1):
        for n in range(1, max_frames + 1):
            for rule in ("max", "mean_template") if k > 1 else ("single",):
                genuine: list[float] = []
                impostor: list[float] = []
                for a, templates in enroll.items():
                    gallery = templates[:k]
                    if rule == "mean_template":
                        gallery = l2_normalize(gallery.mean(axis=0, keepdims=True))
                    for b, probe_rows in probes.items():
                        # Every window of n consecutive probe images is one fused attempt.
                        for start in range(len(probe_rows) - n + 1):
                            probe = l2_normalize(
                                probe_rows[start : start + n].mean(axis=0, keepdims=True)
                            )
                            score = float(np.max(gallery @ probe[0]))
                            (genuine if a == b else impostor).append(score)
                g, i = np.asarray(genuine), np.asarray(impostor)
                fnmr, fmr = rates_at(g, i, threshold)
                record: dict[str, Any] = {
                    "fnmr_at_single_image_threshold": fnmr,
                    "fmr_at_single_image_threshold": fmr,
                    "eer": equal_error_rate(g, i),
                    "genuine_attempts": int(g.size),
                    "impostor_attempts": int(i.size),
                }
                if outsiders is not None and n == 1:
                    galleries = [
                        l2_normalize(t[:k].mean(axis=0, keepdims=True))
                        if rule == "mean_template"
                        else t[:k]
                        for t in enroll.values()
                    ]
                    extra = np.concatenate([np.max(gal @ outsiders.T, axis=0) for gal in galleries])
                    all_impostors = np.concatenate([i, extra])
                    own = threshold_at_fmr(all_impostors, FMR)
                    record["fnmr@1e-3_own_threshold"] = rates_at(g, all_impostors, own)[0]
                    record["impostor_attempts_with_outsiders"] = int(all_impostors.size)
                    record["own_threshold_supported"] = supports(all_impostors.size, FMR)
                out[f"templates={k},frames={n},{rule}"] = record
    return out


def _average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = set().union(*(r.keys() for r in runs)) if runs else set()
    out: dict[str, Any] = {}
    for key in sorted(keys):
        values = [r[key] for r in runs if key in r]
        if isinstance(values[0], dict):
            out[key] = _average(values)
        elif isinstance(values[0], bool):
            out[key] = all(values)
        elif isinstance(values[0], int | float):
            out[key] = _mean_sd([float(v) for v in values])
    return out


def _pipelines_on(
    data: SetEmbeddings, rows: npt.NDArray[np.bool_], jifang: Embed | None
) -> dict[str, Any]:
    """Baseline and jifang figures on the given rows of a set (jifang None: mirror only)."""
    base_g, base_i = euclidean_pairs(data.dlib[rows], data.labels[rows])
    ok = rows & ~np.isnan(data.raw[:, 0])
    mirrored = mirror_mean(data.raw[ok], data.raw_mirror[ok])
    vectors = l2_normalize(mirrored) if jifang is None else jifang(mirrored.astype(np.float32))
    g, i = cosine_pairs(vectors, data.labels[ok])
    out: dict[str, Any] = {}
    if base_g.size:
        out["baseline"] = rates(base_g, base_i)
    if g.size:
        out["jifang"] = rates(g, i)
    return out


def _selected(split: Split, repeat: int) -> AdapterConfig:
    """As `jifang train adapter` does: selected shrinkages, or the built-in ones when the fit
    identities are too few to cross-validate."""
    try:
        return select_config(
            split.fit_raw, split.fit_labels, inner_splits=INNER_SPLITS, seed=SEED + repeat
        ).config
    except SelectionError as err:
        logger.warning("repeat %d: %s; built-in shrinkages used", repeat, err)
        return AdapterConfig()


def _variant_maps(split: Split, populations: Populations) -> dict[str, LinearMap]:
    """Every variant whose fitting data this run has (e.g. no singleton set, no such row)."""
    maps = {}
    for key, (config, sources) in VARIANTS.items():
        try:
            maps[key] = fit_adapter(
                *_fit_rows(split, populations, sources, key != NO_MIRROR), config
            )
        except ValueError as err:
            logger.info("variant %s not fitted: %s", key, err)
    return maps


def run(
    sets: dict[str, SetEmbeddings],
    populations: Populations,
    usable: dict[str, npt.NDArray[np.bool_]],
    repeats: int,
    work: Path,
) -> dict[str, Any]:
    """Every repeat: split, select, fit, evaluate; returns per-repeat figures by set."""
    base = default_pack()
    # The Western configuration is a real pack too: it loads in the edge engine unchanged.
    FaceEngine(mirrored_pack(base, work), threads=1)
    rng = np.random.default_rng(SEED)
    per_repeat: list[dict[str, Any]] = []
    selections: list[dict[str, Any]] = []
    singletons = populations.singletons
    for repeat in range(repeats):
        split = make_split(sets, populations, usable, rng)
        # What `jifang train adapter --select` does on the fit identities, and nothing else.
        chosen = _selected(split, repeat)
        selections.append(chosen.model_dump(mode="json"))
        linear = fit_adapter(split.fit_raw, split.fit_labels, chosen)
        ea_adapter = adapter_through_pack(linear, base, work, repeat)
        variant_maps = _variant_maps(split, populations)
        figures: dict[str, Any] = {}
        outsiders = None
        if singletons is not None:
            data = sets[singletons]
            rows = split.test_rows[singletons] & ~np.isnan(data.raw[:, 0]) & usable[singletons]
            outsiders = ea_adapter(
                mirror_mean(data.raw[rows], data.raw_mirror[rows]).astype(np.float32)
            )
        pooled_genuine: dict[str, list[Matrix]] = {
            "baseline": [],
            "raw": [],
            "mirror": [],
            "ea_adapter": [],
        }
        for name, data in sets.items():
            test = split.test_rows[name] & usable[name]
            ok = test & ~np.isnan(data.raw[:, 0])
            labels = data.labels[ok]
            raw = data.raw[ok]
            mirrored = mirror_mean(raw, data.raw_mirror[ok])
            configs = {
                "raw": l2_normalize(raw),
                "mirror": l2_normalize(mirrored),
                "ea_adapter": ea_adapter(mirrored.astype(np.float32)),
            }
            variants = {
                key: variant_maps[key].apply(raw if key == NO_MIRROR else mirrored)
                for key in variant_maps
            }
            population = "ea_adapter" if populations.adapted(name) else "mirror"
            base_g, base_i = euclidean_pairs(data.dlib[test], data.labels[test])
            record: dict[str, Any] = {
                "fit_identities": split.fit_ids[name],
                "test_identities": split.test_ids[name],
                "failure_to_acquire": int(test.sum() - ok.sum()),
                "excluded_by_quality_flag": int((split.test_rows[name] & ~usable[name]).sum()),
                "jifang_config": population,
            }
            if base_g.size:
                record["baseline"] = rates(base_g, base_i)
            for config_name, vectors in configs.items():
                g, i = cosine_pairs(vectors, labels)
                if g.size:
                    record[config_name] = rates(g, i)
            record["variants"] = {}
            for variant, vectors in variants.items():
                g, i = cosine_pairs(vectors, labels)
                if g.size:
                    record["variants"][variant] = rates(g, i)
            if base_g.size:
                record["jifang"] = record[population]
                record["enrollment"] = enrollment_figures(
                    configs[population],
                    labels,
                    record["jifang"]["threshold"],
                    # Its own generator: the identity splits depend on the seed alone.
                    np.random.default_rng([SEED, repeat, 1]),
                    outsiders if name in populations.east_asian else None,
                )
                if not usable[name].all():
                    record["all_images"] = _pipelines_on(
                        data,
                        split.test_rows[name],
                        ea_adapter if populations.adapted(name) else None,
                    )
            if name in populations.east_asian:
                pooled_genuine["baseline"].append(base_g)
                for key, vectors in configs.items():
                    pooled_genuine[key].append(cosine_pairs(vectors, labels)[0])
            figures[name] = record
        if singletons is not None and pooled_genuine["baseline"]:
            figures[singletons] |= _singleton_row(
                sets[singletons], split, usable[singletons], ea_adapter, pooled_genuine
            )
        for record in figures.values():
            for block in (record, record.get("all_images", {})):
                if "jifang" in block and "baseline" in block:
                    # Paired per split: the same test identities for both pipelines.
                    block["jifang_minus_baseline"] = {
                        key: block["jifang"][key] - block["baseline"][key]
                        for key in ("fnmr@1e-3", "eer")
                    }
                    block["jifang_better"] = {
                        key: float(block["jifang"][key] < block["baseline"][key])
                        for key in ("fnmr@1e-3", "eer")
                    }
        per_repeat.append(figures)
        logger.info("repeat %d done", repeat)
    return {"repeats": per_repeat, "selections": selections}


def _singleton_row(
    data: SetEmbeddings,
    split: Split,
    usable: npt.NDArray[np.bool_],
    adapter: Embed,
    pooled: dict[str, list[Matrix]],
) -> dict[str, Any]:
    """Threshold on the test singletons' impostor pairs; FNMR on the East Asian genuine pairs."""
    test = split.test_rows[data.name] & usable
    _, base_i = euclidean_pairs(data.dlib[test], data.labels[test])
    ok = test & ~np.isnan(data.raw[:, 0])
    labels = data.labels[ok]
    mirrored = mirror_mean(data.raw[ok], data.raw_mirror[ok])
    _, raw_i = cosine_pairs(l2_normalize(data.raw[ok]), labels)
    _, mirror_i = cosine_pairs(l2_normalize(mirrored), labels)
    _, ours_i = cosine_pairs(adapter(mirrored.astype(np.float32)), labels)
    ours = rates(np.concatenate(pooled["ea_adapter"]), ours_i)
    return {
        "baseline": rates(np.concatenate(pooled["baseline"]), base_i),
        "raw": rates(np.concatenate(pooled["raw"]), raw_i),
        "mirror": rates(np.concatenate(pooled["mirror"]), mirror_i),
        "ea_adapter": ours,
        "jifang": ours,
    }


def _strip(tree: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: _strip(v, key) if isinstance(v, dict) else v for k, v in tree.items() if k != key}


def summarise(
    result: dict[str, Any], populations: Populations, repeats: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The acceptance JSON (means) and the detail JSON (mean and sd of everything)."""
    # Thresholds learned from the internal sets are never written to the repository.
    detail = _strip(_average(result["repeats"]), "threshold")
    summary: dict[str, Any] = {}
    for name, record in detail.items():
        summary[name] = {
            "baseline": {k: record["baseline"][k]["mean"] for k in ("fnmr@1e-3", "eer")},
            "jifang": {k: record["jifang"][k]["mean"] for k in ("fnmr@1e-3", "eer")},
            "fit_identities": int(round(record["fit_identities"]["mean"])),
            "test_identities": int(round(record["test_identities"]["mean"])),
        }
    chosen = [(s["whiten_shrinkage"], s["shrinkage"]) for s in result["selections"]]
    detail["_protocol"] = {
        "seed": SEED,
        "repeats": repeats,
        "figures": "mean and sd over repeated identity splits; pairs among test identities",
        "east_asian_sets": list(populations.east_asian),
        "singleton_set": populations.singletons,
        "east_asian_split": f"{FIT_FRACTION:.0%} of identities fit (floor), the rest test",
        "adapter": "wccn (training.adapt), shrinkages chosen per repeat by select_config on "
        f"the fit identities only ({INNER_SPLITS} inner identity splits, held-out FNMR@1e-3); "
        f"chosen (whiten_shrinkage, shrinkage) per repeat: {json.dumps(chosen)}",
        "adapter_fit_data": "fit identities of the East Asian sets + fit half of the singleton set",
        "quality_exclusion": f"images flagged {EXCLUDED_FLAG!r} in a set's {QUALITY_FILE} are "
        "left out of both pipelines' pairs and of the fit data; all_images holds the "
        "figures with them",
        "configs": "raw: base pack; mirror: base pack with the mirrored recognizer (chip and "
        "its mirror image, mean of unit descriptors); ea_adapter: mirror + East Asian adapter",
        "east_asian_jifang": "jifang = ea_adapter",
        "western_sets": "jifang = mirror (no adapter, nothing fitted: all identities test); "
        "ea_adapter shows what the East Asian adapter does to them",
        "singletons": "threshold at FMR 1e-3 on impostor pairs among the test singletons; FNMR "
        "on the pooled genuine pairs of the East Asian sets' test identities",
        "baseline": "dlib-bin: HOG (upsample 1), 5-point shape, 150 px chip, ResNet v1, "
        "Euclidean distance",
        "enrollment": enrollment_figures.__doc__,
    }
    return summary, detail


def main() -> None:
    """Embed (cached), run the repeated splits, write both result files."""
    from face_pipeline import DlibReference

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--faces", type=Path, default=SHARED_FACES, help="folder of face sets")
    parser.add_argument(
        "--east-asian-pattern",
        default=EAST_ASIAN_PATTERN,
        help="regular expression: set names taken as East Asian populations",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.faces.is_dir():
        raise SystemExit(f"no face sets at {args.faces}")
    engine = FaceEngine(default_pack(), threads=2)
    reference = DlibReference()
    face_sets = find_sets(args.faces)
    sets = {s.name: load_or_compute(s, engine, reference) for s in face_sets}
    try:
        usable = {s.name: usable_rows(sets[s.name], s.root) for s in face_sets}
        populations = classify(sets, args.east_asian_pattern)
    except ProtocolError as err:
        raise SystemExit(str(err)) from err
    if not populations.east_asian:
        raise SystemExit(f"no set name matches {args.east_asian_pattern!r}: nothing to adapt")
    logger.info("East Asian: %s; singletons: %s", populations.east_asian, populations.singletons)
    model_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir(), prefix=".population-") as tmp:
        result = run(sets, populations, usable, args.repeats, Path(tmp))
    summary, detail = summarise(result, populations, args.repeats)
    write_result("population_detail", detail)
    # population.json holds exactly one record per face set (the acceptance format); the
    # machine and date are in population_detail.json's _meta.
    path = RESULTS / "population.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))  # noqa: T201 - a bench script prints its figures


if __name__ == "__main__":
    main()
