"""Accuracy per population: the dlib reference against jifang's best configuration.

Every face set in ../shared/data/faces is evaluated on its own. Identities are split with a
fixed seed, repeated REPEATS times (each repeat draws a new split from the same seed
sequence), and every figure is the mean over the repeats with its standard deviation in
bench/results/population_detail.json.

- East Asian sets with several images per person (casia_ea_dev, lfw_east_asian28_gray):
  half of the identities (floor) are fit identities, the rest test identities.
- cjk_singletons (one photo per person): half of the people are fit material, half test.
- jifang's configuration embeds each chip and its mirror image and averages the two unit
  descriptors (the pack's recognizer graph is wrapped to do so, training.adapt's
  `mirror_recognizer`); nothing is learned for that.
- The population adapter for Chinese operators is fitted, per repeat, on the fit identities
  of both East Asian sets plus the fit half of cjk_singletons (extra between-person
  material), with training.adapt's defaults, exported to ONNX inside a real pack (mirrored
  recognizer + adapter), and applied through the same wrapper the edge engine loads.
- Western sets: jifang's configuration for a Western population is the mirrored pack
  without adapter (the adapter is per population, like the calibration); nothing is fitted
  on them, so every identity is a test identity. What the East Asian adapter would do to
  them is reported in the detail file (`ea_adapter`).

Scores: the dlib reference uses Euclidean distance of its descriptors (negated so higher
means more alike); jifang uses cosine of L2-normalised embeddings. FNMR@1e-3 is measured
at the threshold where at most 0.1 % of the test impostor pairs are accepted; where fewer
than 3,000 impostor pairs exist (rule of three) the figure rests on the top two or three
impostor scores and is flagged `supported: false` in the detail file.

cjk_singletons has no genuine pairs. Its row reports the East Asian operating point with a
large impostor population: the threshold at FMR 1e-3 is set on all pairs among the test
singletons (about 286,000), and FNMR is the rejection rate of the genuine pairs of the
test identities of casia_ea_dev and lfw_east_asian28_gray together at that threshold.

Multi-template enrollment and multi-frame fusion are measured on the test identities of
each set with several images per person (see `enrollment_figures`); they go to the detail
file.

Writes bench/results/population.json and bench/results/population_detail.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import RESULTS, SHARED_FACES, default_pack, model_dir, write_result
from _population_data import SetEmbeddings, load_or_compute

from calibration.datasets import find_sets
from calibration.metrics import equal_error_rate, rates_at, supports, threshold_at_fmr
from models.engine import FaceEngine
from models.manifest import load_manifest
from models.runtime.registry import build_component
from models.types import Task
from training.adapt import (
    AdapterConfig,
    AdapterMethod,
    AdapterProvenance,
    LinearMap,
    build_adapted_pack,
    fit_adapter,
    mirror_mean,
)

logger = logging.getLogger(__name__)

SEED = 20261129
REPEATS = 10
FMR = 1e-3
EAST_ASIAN = ("casia_ea_dev", "lfw_east_asian28_gray")
SINGLETONS = "cjk_singletons"
FIT_FRACTION = 0.5
ENROLL_POOL = 3
"""Images per test identity kept for enrollment; the rest are probes."""
MAX_FRAMES = 3
"""Most probe images fused into one attempt (a cab verification takes a few frames)."""
NO_MIRROR = "adapter_without_mirror"
VARIANTS: dict[str, tuple[AdapterConfig, tuple[str, ...]]] = {
    NO_MIRROR: (AdapterConfig(), (*EAST_ASIAN, SINGLETONS)),
    "wccn_ea_sets_only": (AdapterConfig(), EAST_ASIAN),
    "whiten_singletons_only": (AdapterConfig(method=AdapterMethod.WHITEN), (SINGLETONS,)),
    "center_only": (AdapterConfig(method=AdapterMethod.CENTER), (*EAST_ASIAN, SINGLETONS)),
    "whiten_only": (AdapterConfig(method=AdapterMethod.WHITEN), (*EAST_ASIAN, SINGLETONS)),
    "wccn_without_whitening": (
        AdapterConfig(whiten_shrinkage=1.0, shrinkage=0.5),
        (*EAST_ASIAN, SINGLETONS),
    ),
    "lda_64": (
        AdapterConfig(method=AdapterMethod.LDA, output_dim=64, shrinkage=0.5),
        (*EAST_ASIAN, SINGLETONS),
    ),
}
"""Alternatives to the shipped recipe, fitted on the same split (numpy reference of the
graph): which fitting data and which transform. Reported so that what did not help shows."""

Matrix = npt.NDArray[np.float64]
Embed = Callable[[npt.NDArray[np.float32]], Matrix]


def _l2(x: npt.ArrayLike) -> Matrix:
    m = np.asarray(x, np.float64)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def _pairs(scores: Matrix, labels: npt.NDArray[np.str_]) -> tuple[Matrix, Matrix]:
    codes = np.unique(labels, return_inverse=True)[1]
    upper = np.triu_indices(len(labels), k=1)
    same = codes[upper[0]] == codes[upper[1]]
    values = scores[upper]
    return values[same], values[~same]


def cosine_pairs(vectors: Matrix, labels: npt.NDArray[np.str_]) -> tuple[Matrix, Matrix]:
    """Genuine and impostor cosine scores among normalised vectors (each pair once)."""
    return _pairs(vectors @ vectors.T, labels)


def euclidean_pairs(vectors: Matrix, labels: npt.NDArray[np.str_]) -> tuple[Matrix, Matrix]:
    """dlib's native score: minus the Euclidean distance."""
    sq = np.sum(vectors**2, axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * vectors @ vectors.T, 0.0))
    return _pairs(-dist, labels)


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


def make_split(sets: dict[str, SetEmbeddings], rng: np.random.Generator) -> Split:
    """Split East Asian sets by identity; Western sets are all test."""
    test_rows: dict[str, npt.NDArray[np.bool_]] = {}
    fit_ids: dict[str, int] = {}
    test_ids: dict[str, int] = {}
    fit_raw: list[npt.NDArray[np.float64]] = []
    fit_plain: list[npt.NDArray[np.float32]] = []
    fit_labels: list[str] = []
    for name, data in sets.items():
        identities = np.unique(data.labels)
        if name in EAST_ASIAN or name == SINGLETONS:
            chosen = rng.permutation(identities)[: int(len(identities) * FIT_FRACTION)]
            fit = np.isin(data.labels, chosen)
        else:
            fit = np.zeros(len(data.labels), bool)
        acquired = ~np.isnan(data.raw[:, 0])
        rows = fit & acquired
        fit_raw.append(mirror_mean(data.raw[rows], data.raw_mirror[rows]))
        fit_plain.append(data.raw[rows])
        fit_labels += [f"{name}/{label}" for label in data.labels[fit & acquired]]
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


def _fit_rows(
    split: Split, sources: tuple[str, ...], mirror: bool = True
) -> tuple[npt.NDArray[np.float64], list[str]]:
    keep = [i for i, label in enumerate(split.fit_labels) if label.split("/")[0] in sources]
    rows = split.fit_raw if mirror else split.fit_plain.astype(np.float64)
    return rows[keep], [split.fit_labels[i] for i in keep]


NESTED_GRID = tuple(
    AdapterConfig(whiten_shrinkage=w, shrinkage=b) for w in (0.6, 0.8, 1.0) for b in (0.5, 0.7, 0.9)
)
"""Shrinkage pairs a nested selection chooses from (the shipped defaults are one of them)."""
NESTED = "nested_selection"


def nested_choice(split: Split, rng: np.random.Generator) -> AdapterConfig:
    """Choose the shrinkages using fit identities only (inner identity split), so that the
    test identities play no part in the choice; scored by FNMR@1e-3 on the inner-held-out
    identities of each East Asian set, averaged over the sets."""
    labels = np.asarray(split.fit_labels)
    sets = np.asarray([label.split("/")[0] for label in labels])
    inner_test = np.zeros(len(labels), bool)
    for name in EAST_ASIAN:
        identities = np.unique(labels[sets == name])
        held = rng.permutation(identities)[: len(identities) // 2]
        inner_test |= np.isin(labels, held)
    best: tuple[float, AdapterConfig] | None = None
    for config in NESTED_GRID:
        linear = fit_adapter(split.fit_raw[~inner_test], list(labels[~inner_test]), config)
        scores = []
        for name in EAST_ASIAN:
            rows = inner_test & (sets == name)
            g, i = cosine_pairs(linear.apply(split.fit_raw[rows]), labels[rows])
            scores.append(rates_at(g, i, threshold_at_fmr(i, FMR))[0])
        score = float(np.mean(scores))
        if best is None or score < best[0]:
            best = (score, config)
    assert best is not None  # the grid is not empty
    return best[1]


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
    adapter = build_component(pack, entry, 1)

    def embed(mirrored: npt.NDArray[np.float32]) -> Matrix:
        return _l2(adapter.transform(mirrored))

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
                        gallery = _l2(gallery.mean(axis=0, keepdims=True))
                    for b, probe_rows in probes.items():
                        # Every window of n consecutive probe images is one fused attempt.
                        for start in range(len(probe_rows) - n + 1):
                            probe = _l2(probe_rows[start : start + n].mean(axis=0, keepdims=True))
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
                        _l2(t[:k].mean(axis=0, keepdims=True)) if rule == "mean_template" else t[:k]
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


def run(sets: dict[str, SetEmbeddings], repeats: int, work: Path) -> dict[str, Any]:
    """Every repeat: split, fit, evaluate; returns per-repeat figures by set and config."""
    base = default_pack()
    # The Western configuration is a real pack too: it loads in the edge engine unchanged.
    FaceEngine(
        build_adapted_pack(
            base, None, work, "jifang-open-mirror", AdapterProvenance(source="none"), mirror=True
        ),
        threads=1,
    )
    rng = np.random.default_rng(SEED)
    per_repeat: list[dict[str, Any]] = []
    nested_choices: list[dict[str, Any]] = []
    config = AdapterConfig()
    for repeat in range(repeats):
        split = make_split(sets, rng)
        linear = fit_adapter(split.fit_raw, split.fit_labels, config)
        ea_adapter = adapter_through_pack(linear, base, work, repeat)
        variant_maps = {
            key: fit_adapter(*_fit_rows(split, sources, key != NO_MIRROR), cfg)
            for key, (cfg, sources) in VARIANTS.items()
        }
        chosen = nested_choice(split, np.random.default_rng([SEED, repeat]))
        variant_maps[NESTED] = fit_adapter(split.fit_raw, split.fit_labels, chosen)
        nested_choices.append(chosen.model_dump(mode="json"))
        figures: dict[str, Any] = {}
        singles = sets.get(SINGLETONS)
        outsiders = None
        if singles is not None:
            rows = split.test_rows[SINGLETONS] & ~np.isnan(singles.raw[:, 0])
            outsiders = ea_adapter(
                mirror_mean(singles.raw[rows], singles.raw_mirror[rows]).astype(np.float32)
            )
        pooled_genuine: dict[str, list[Matrix]] = {
            "baseline": [],
            "raw": [],
            "mirror": [],
            "ea_adapter": [],
        }
        for name, data in sets.items():
            test = split.test_rows[name]
            ok = test & ~np.isnan(data.raw[:, 0])
            labels = data.labels[ok]
            raw = data.raw[ok]
            mirrored = mirror_mean(raw, data.raw_mirror[ok])
            configs = {
                "raw": _l2(raw),
                "mirror": _l2(mirrored),
                "ea_adapter": ea_adapter(mirrored.astype(np.float32)),
            }
            variants = {
                key: variant_maps[key].apply(raw if key == NO_MIRROR else mirrored)
                for key in variant_maps
            }
            population = "ea_adapter" if name in EAST_ASIAN or name == SINGLETONS else "mirror"
            base_g, base_i = euclidean_pairs(data.dlib[test], data.labels[test])
            record: dict[str, Any] = {
                "fit_identities": split.fit_ids[name],
                "test_identities": split.test_ids[name],
                "failure_to_acquire": int(test.sum() - ok.sum()),
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
                    rng,
                    outsiders if name in EAST_ASIAN else None,
                )
            if name in EAST_ASIAN:
                pooled_genuine["baseline"].append(base_g)
                for key, vectors in configs.items():
                    pooled_genuine[key].append(cosine_pairs(vectors, labels)[0])
            figures[name] = record
        if SINGLETONS in sets:
            figures[SINGLETONS] |= _singleton_row(
                sets[SINGLETONS], split, ea_adapter, pooled_genuine
            )
        for record in figures.values():
            if "jifang" in record and "baseline" in record:
                # Paired per split: the same test identities for both pipelines.
                record["jifang_minus_baseline"] = {
                    key: record["jifang"][key] - record["baseline"][key]
                    for key in ("fnmr@1e-3", "eer")
                }
                record["jifang_better"] = {
                    key: float(record["jifang"][key] < record["baseline"][key])
                    for key in ("fnmr@1e-3", "eer")
                }
        per_repeat.append(figures)
        logger.info("repeat %d done", repeat)
    return {"repeats": per_repeat, "nested_choices": nested_choices}


def _singleton_row(
    data: SetEmbeddings, split: Split, adapter: Embed, pooled: dict[str, list[Matrix]]
) -> dict[str, Any]:
    """Threshold on the test singletons' impostor pairs; FNMR on the East Asian genuine pairs."""
    test = split.test_rows[SINGLETONS]
    _, base_i = euclidean_pairs(data.dlib[test], data.labels[test])
    ok = test & ~np.isnan(data.raw[:, 0])
    labels = data.labels[ok]
    mirrored = mirror_mean(data.raw[ok], data.raw_mirror[ok])
    _, raw_i = cosine_pairs(_l2(data.raw[ok]), labels)
    _, mirror_i = cosine_pairs(_l2(mirrored), labels)
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


def summarise(result: dict[str, Any], repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
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
    detail["_protocol"] = {
        "seed": SEED,
        "repeats": repeats,
        "figures": "mean and sd over repeated identity splits; pairs among test identities",
        "east_asian_split": f"{FIT_FRACTION:.0%} of identities fit (floor), the rest test",
        "adapter": AdapterConfig().model_dump(mode="json"),
        "adapter_fit_data": "fit identities of " + " + ".join(EAST_ASIAN) + f" + fit half of "
        f"{SINGLETONS}",
        "configs": "raw: base pack; mirror: base pack with the mirrored recognizer (chip and "
        "its mirror image, mean of unit descriptors); ea_adapter: mirror + East Asian adapter",
        "east_asian_sets": "jifang = ea_adapter",
        "western_sets": "jifang = mirror (no adapter, nothing fitted: all identities test); "
        "ea_adapter shows what the East Asian adapter does to them",
        SINGLETONS: "threshold at FMR 1e-3 on impostor pairs among the test singletons; FNMR "
        "on the pooled genuine pairs of the East Asian sets' test identities",
        "baseline": "dlib-bin: HOG (upsample 1), 5-point shape, 150 px chip, ResNet v1, "
        "Euclidean distance",
        "enrollment": enrollment_figures.__doc__,
        NESTED: (nested_choice.__doc__ or "")
        + " Chosen per repeat: "
        + json.dumps(result["nested_choices"]),
    }
    return summary, detail


def main() -> None:
    """Embed (cached), run the repeated splits, write both result files."""
    from face_pipeline import DlibReference

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not SHARED_FACES.is_dir():
        raise SystemExit(f"no face sets at {SHARED_FACES}")
    engine = FaceEngine(default_pack(), threads=2)
    reference = DlibReference()
    sets = {s.name: load_or_compute(s, engine, reference) for s in find_sets(SHARED_FACES)}
    model_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir(), prefix=".population-") as tmp:
        result = run(sets, args.repeats, Path(tmp))
    summary, detail = summarise(result, args.repeats)
    write_result("population_detail", detail)
    # population.json holds exactly one record per face set (the acceptance format); the
    # machine and date are in population_detail.json's _meta.
    path = RESULTS / "population.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))  # noqa: T201 - a bench script prints its figures


if __name__ == "__main__":
    main()
