"""Score normalisation (models.matching.ScoreNorm): the AS-norm formula by hand, that it
helps where faces differ in how much they resemble everyone ("hubs"), the stranger figures
of the attempt protocol, and bad cohorts."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.attempts import Unit, set_attempts
from models.matching import ScoreNorm, cohort_stats


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


class _Population:
    """Faces around a shared "hub" direction whose weight varies per person: heavy-hub
    people resemble every other heavy-hub person, so raw cosines mix up who is who."""

    def __init__(self, rng: np.random.Generator, dim: int = 32) -> None:
        self.rng = rng
        self.dim = dim
        self.hub = _unit_rows(rng.normal(size=dim))

    def people(self, n: int, per_person: int, tag: str) -> list[Unit]:
        units: list[Unit] = []
        for p in range(n):
            identity = _unit_rows(self.rng.normal(size=self.dim))
            weight = self.rng.uniform(0.0, 1.5)
            noise = self.rng.normal(scale=0.12, size=(per_person, self.dim))
            rows = _unit_rows(identity + weight * self.hub + noise)
            units += [Unit(f"{tag}{p}", f"{tag}{p}/{i}", rows[i]) for i in range(per_person)]
        return units


def test_score_is_the_symmetric_formula_over_the_top_cohort_cosines() -> None:
    rng = np.random.default_rng(3)
    cohort = _unit_rows(rng.normal(size=(60, 8)))
    templates = _unit_rows(rng.normal(size=(2, 8)))
    probe = _unit_rows(rng.normal(size=(1, 8)))[0]
    norm = ScoreNorm(cohort, top=5)
    expected = []
    for t in templates:
        p_top = np.sort(cohort @ probe)[::-1][:5]
        t_top = np.sort(cohort @ t)[::-1][:5]
        s = float(t @ probe)
        expected.append(0.5 * ((s - p_top.mean()) / p_top.std() + (s - t_top.mean()) / t_top.std()))
    assert norm.score(templates, probe, cohort) == pytest.approx(max(expected), rel=1e-6)
    mean, std = cohort_stats(templates, cohort, 5)
    assert mean[0] == pytest.approx(np.sort(cohort @ templates[0])[::-1][:5].mean(), rel=1e-6)
    assert std.shape == (2,)


def test_normalisation_lowers_fnmr_where_faces_differ_in_hubness() -> None:
    population = _Population(np.random.default_rng(7))
    units = population.people(40, 5, "operator")
    distractors = np.stack([u.embedding for u in population.people(150, 1, "distractor")])
    strangers = np.stack([u.embedding for u in population.people(60, 1, "stranger")])
    raw = set_attempts(units, 1)
    normed = set_attempts(units, 1, ScoreNorm(distractors))
    assert raw["impostor_attempts"] == normed["impostor_attempts"]
    assert raw["fnmr_at_fmr"]["1e-2"] > 0.1
    assert normed["fnmr_at_fmr"]["1e-2"] < 0.25 * raw["fnmr_at_fmr"]["1e-2"]
    with_strangers = set_attempts(units, 1, ScoreNorm(distractors), strangers)
    assert with_strangers["stranger_attempts"] == 60 * 40 * 5  # 5 rotations x 40 enrolled
    assert set(with_strangers["stranger_fmr"]) == {"1e-2", "1e-3", "1e-4"}
    # Guarding strangers too can only raise the threshold, never lower FNMR.
    both = with_strangers["fnmr_at_fmr_both"]["1e-2"]
    assert both is not None and both >= normed["fnmr_at_fmr"]["1e-2"]
    assert with_strangers["fnmr_at_fmr_both"]["1e-4"] is None  # 12,000 strangers: < 3/1e-4


def test_a_cohort_too_small_or_a_bad_top_is_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"needs at least 50 faces"):
        ScoreNorm(_unit_rows(rng.normal(size=(10, 8))))
    with pytest.raises(ValueError, match="top 0"):
        ScoreNorm(_unit_rows(rng.normal(size=(60, 8))), top=0)
    with pytest.raises(ValueError, match="top 80"):
        cohort_stats(np.ones((1, 8)), _unit_rows(rng.normal(size=(60, 8))), 80)
