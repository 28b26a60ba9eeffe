"""FMR/FNMR arithmetic against brute-force counts on generated scores."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.metrics import (
    clopper_pearson,
    fmr_key,
    identity_bootstrap,
    labelled_pair_scores,
    pair_scores,
    rates_at,
    score_report,
    supports,
    threshold_at_fmr,
    weighted_threshold_at_fmr,
)


def _brute_rates(genuine: list[float], impostor: list[float], t: float) -> tuple[float, float]:
    false_non_matches = sum(1 for s in genuine if not s >= t)
    false_matches = sum(1 for s in impostor if s >= t)
    return false_non_matches / len(genuine), false_matches / len(impostor)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_and_rates_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounded scores make ties, the case where an off-by-one hides.
    genuine = np.round(rng.normal(0.8, 0.08, 700), 3)
    impostor = np.round(rng.normal(0.5, 0.1, 30_000), 3)
    for fmr in (1e-2, 1e-3, 1e-4):
        t = threshold_at_fmr(impostor, fmr)
        fnmr, achieved = rates_at(genuine, impostor, t)
        bf_fnmr, bf_fmr = _brute_rates(genuine.tolist(), impostor.tolist(), t)
        assert (fnmr, achieved) == (bf_fnmr, bf_fmr)
        assert achieved <= fmr
        # Smallest such threshold: every candidate score below it lets too many impostors in.
        lower = [s for s in set(impostor.tolist()) if s < t]
        if lower:
            assert _brute_rates(genuine.tolist(), impostor.tolist(), max(lower))[1] > fmr


def test_score_report_claims_only_supported_fmrs() -> None:
    rng = np.random.default_rng(3)
    genuine, impostor = rng.normal(0.8, 0.1, 100), rng.normal(0.4, 0.1, 3_500)
    report = score_report(genuine, impostor)
    assert set(report.fnmr_at_fmr) == {"1e-2", "1e-3"}  # 1e-4 would need 30,000 pairs
    assert supports(3_000, 1e-3) and not supports(2_999, 1e-3)
    t = report.threshold_at_fmr["1e-3"]
    assert report.fnmr_at_fmr["1e-3"] == _brute_rates(list(genuine), list(impostor), t)[0]
    assert fmr_key(1e-5) == "1e-5"


def test_pair_scores_count_every_pair_once() -> None:
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(9, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = ["a", "a", "a", "b", "b", "c", "c", "c", "c"]
    scores = labelled_pair_scores(emb, labels)
    brute_gen, brute_imp = [], []
    for i in range(9):
        for j in range(i + 1, 9):
            s = float(np.dot(emb[i].astype(np.float64), emb[j].astype(np.float64)))
            (brute_gen if labels[i] == labels[j] else brute_imp).append(s)
    assert sorted(scores.genuine) == pytest.approx(sorted(brute_gen))
    assert sorted(scores.impostor) == pytest.approx(sorted(brute_imp))
    assert len(brute_gen) == 3 + 1 + 6
    names = scores.identities
    assert [names[c] for c in scores.genuine_identity].count("c") == 6
    assert all(a != b for a, b in scores.impostor_identities)
    gen, imp = pair_scores(emb, labels)
    assert gen.size == 10 and imp.size == 26


def test_weighted_threshold_with_unit_weights_is_the_plain_one() -> None:
    rng = np.random.default_rng(5)
    impostor = np.round(rng.normal(0.5, 0.1, 5_000), 3)
    desc = np.sort(impostor)[::-1]
    for fmr in (1e-2, 1e-3):
        plain = threshold_at_fmr(impostor, fmr)
        assert weighted_threshold_at_fmr(desc, np.ones_like(desc), fmr) == plain
    # Doubling every weight changes nothing; zero weights drop pairs.
    assert weighted_threshold_at_fmr(desc, 2 * np.ones_like(desc), 1e-2) == threshold_at_fmr(
        impostor, 1e-2
    )
    w = np.ones_like(desc)
    w[:10] = 0
    assert weighted_threshold_at_fmr(desc, w, 1e-3) == threshold_at_fmr(desc[10:], 1e-3)


def test_clopper_pearson_matches_known_values() -> None:
    low, high = clopper_pearson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.03622, abs=1e-4)  # ~3/n, rule of three
    low, high = clopper_pearson(10, 100)
    assert low == pytest.approx(0.04900, abs=1e-4) and high == pytest.approx(0.17622, abs=1e-4)
    with pytest.raises(ValueError, match="at least one trial"):
        clopper_pearson(0, 0)


def test_identity_bootstrap_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(40, 16))
    emb = np.concatenate([c + 0.6 * rng.normal(size=(5, 16)) for c in centres])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = [f"id{i}" for i in range(40) for _ in range(5)]
    scores = labelled_pair_scores(emb.astype(np.float32), labels)
    boot = identity_bootstrap(scores, (1e-2,), replicates=100, seed=1)
    t = threshold_at_fmr(scores.impostor, 1e-2)
    fnmr = rates_at(scores.genuine, scores.impostor, t)[0]
    low, high = boot.threshold["1e-2"]
    assert low <= t <= high and low < high
    f_low, f_high = boot.fnmr["1e-2"]
    assert f_low <= fnmr <= f_high
    again = identity_bootstrap(scores, (1e-2,), replicates=100, seed=1)
    assert again == boot  # seeded: reproducible
