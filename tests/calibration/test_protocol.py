"""The population protocol (bench/population.py): which sets are adapted, which images are
left out, splits, pair scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import protocol as population
from calibration.protocol import ProtocolError, SetEmbeddings


def _set(root: Path, name: str, people: int, shots: int, seed: int) -> SetEmbeddings:
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"p{i}" for i in range(people)], shots)
    paths = np.asarray(
        [str(root / name / label / f"{i}.png") for i, label in enumerate(labels)], dtype=str
    )
    n = len(labels)
    raw = rng.standard_normal((n, 8)).astype(np.float32)
    return SetEmbeddings(
        name,
        labels.astype(str),
        paths,
        rng.standard_normal((n, 8)),
        raw,
        raw[:, ::-1].copy(),
        np.full(n, "detected"),
        np.ones(n, np.float32),
        np.full(n, 100.0, np.float32),
        np.zeros(n, np.float32),
    )


def test_populations_by_name_and_singletons_by_shape(tmp_path: Path) -> None:
    sets = {
        "casia_ea_dev": _set(tmp_path, "casia_ea_dev", 6, 3, 0),
        "cjk_singletons": _set(tmp_path, "cjk_singletons", 20, 1, 1),
        "lfw_7people": _set(tmp_path, "lfw_7people", 4, 3, 2),
        "site_ea_holdout": _set(tmp_path, "site_ea_holdout", 5, 2, 3),
    }
    found = population.classify(sets, population.EAST_ASIAN_PATTERN)
    assert found.east_asian == ("casia_ea_dev", "site_ea_holdout")
    assert found.singletons == "cjk_singletons"
    assert not found.adapted("lfw_7people")
    assert population.classify(sets, "nothing-matches").east_asian == ()


def test_severe_images_are_left_out_of_fit_and_test(tmp_path: Path) -> None:
    data = _set(tmp_path, "casia_ea_dev", 6, 3, 0)
    root = tmp_path / "casia_ea_dev"
    root.mkdir()
    (root / "QUALITY.tsv").write_text(
        "path\tflag\tnote\np0/0.png\tsevere\tcut\np1/3.png\tpartial\tchin cut\n",
        encoding="utf-8",
    )
    usable = population.usable_rows(data, root)
    assert usable.sum() == len(usable) - 1  # only the severe one
    assert not usable[0]
    western = _set(tmp_path, "lfw_7people", 4, 3, 2)
    assert population.usable_rows(western, tmp_path / "lfw_7people").all()  # no file

    sets = {"casia_ea_dev": data, "lfw_7people": western}
    pops = population.classify(sets, population.EAST_ASIAN_PATTERN)
    masks = {"casia_ea_dev": usable, "lfw_7people": np.ones(12, bool)}
    split = population.make_split(sets, pops, masks, np.random.default_rng(0))
    assert split.fit_ids == {"casia_ea_dev": 3, "lfw_7people": 0}
    assert split.test_rows["lfw_7people"].all()
    fit_rows = ~split.test_rows["casia_ea_dev"] & usable
    assert len(split.fit_labels) == int(fit_rows.sum())
    # The same seed gives the same split.
    again = population.make_split(sets, pops, masks, np.random.default_rng(0))
    assert (again.test_rows["casia_ea_dev"] == split.test_rows["casia_ea_dev"]).all()


def test_quality_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    data = _set(tmp_path, "casia_ea_dev", 2, 2, 0)
    root = tmp_path / "casia_ea_dev"
    root.mkdir()
    (root / "QUALITY.tsv").write_text("file\tproblem\np0/0.png\tsevere\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match="QUALITY.tsv: needs the columns path and flag"):
        population.usable_rows(data, root)


def test_two_singleton_sets_are_refused(tmp_path: Path) -> None:
    sets = {
        "cjk_singletons": _set(tmp_path, "cjk_singletons", 5, 1, 0),
        "casia_singletons": _set(tmp_path, "casia_singletons", 5, 1, 1),
    }
    with pytest.raises(ProtocolError, match="more than one East Asian singleton set"):
        population.classify(sets, population.EAST_ASIAN_PATTERN)


def test_pair_scores_of_both_pipelines() -> None:
    labels = np.asarray(["a", "a", "b", "c"])
    vectors = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    genuine, impostor = population.cosine_pairs(vectors, labels)
    assert genuine.tolist() == pytest.approx([0.6])
    assert sorted(impostor.tolist()) == pytest.approx([-1.0, -0.6, 0.0, 0.0, 0.8])
    genuine, impostor = population.euclidean_pairs(vectors, labels)
    # Higher means more alike: minus the distance.
    assert genuine.tolist() == pytest.approx([-np.sqrt(0.16 + 0.64)])
    assert impostor.size == 5 and impostor.max() <= 0.0
    figures = population.rates(np.asarray([0.9, 0.1]), np.linspace(0.0, 0.5, 4000))
    assert figures["fnmr@1e-3"] == 0.5 and figures["supported"]
