"""Population adapters: the numpy fit, the pack they go into, and `jifang train adapter`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibration.metrics import equal_error_rate
from jifang.cli import app
from models.engine import FaceEngine
from models.errors import ModelError
from models.manifest import load_manifest, verify_pack
from models.runtime.image import read_image
from models.types import Task
from tests.cli.test_cli import BLOCK_TORCH
from tests.models.faces import write_set
from training.adapt import (
    AdapterConfig,
    AdapterMethod,
    AdapterProvenance,
    SelectionError,
    build_adapted_pack,
    fit_adapter,
    select_config,
)

DIM = 32


def _population(seed: int, people: int, shots: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings where people differ little and one person's photos vary a lot.

    Like a recognizer trained on another population: every face sits near a common offset,
    identity lives in a few low-variance directions and nuisance (pose, light) in others.
    """
    rng = np.random.default_rng(seed)
    offset = np.zeros(DIM)
    offset[0] = 4.0
    identity_scale = np.r_[np.zeros(1), np.full(7, 0.35), np.full(DIM - 8, 0.05)]
    nuisance_scale = np.r_[np.zeros(8), np.full(8, 0.6), np.full(DIM - 16, 0.05)]
    centres = offset + rng.standard_normal((people, DIM)) * identity_scale
    rows = np.repeat(centres, shots, axis=0)
    rows += rng.standard_normal(rows.shape) * nuisance_scale
    labels = np.repeat(np.array([f"p{i:03d}" for i in range(people)]), shots)
    return rows.astype(np.float32), labels


def _eer(vectors: np.ndarray, labels: np.ndarray) -> float:
    sims = vectors @ vectors.T
    upper = np.triu_indices(len(labels), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    return equal_error_rate(sims[upper][same], sims[upper][~same])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("method", "gain"),
    [
        (AdapterMethod.WCCN, 2.0),
        (AdapterMethod.LDA, 2.0),
        # Without labels, whitening cannot tell nuisance from identity: it helps, but less.
        (AdapterMethod.WHITEN, 1.1),
        (AdapterMethod.CENTER, 1.05),
    ],
)
def test_adapter_separates_held_out_people(method: AdapterMethod, gain: float) -> None:
    fit_x, fit_y = _population(0, people=40, shots=4)
    test_x, test_y = _population(1, people=30, shots=4)  # people never seen by the fit
    linear = fit_adapter(fit_x, fit_y, AdapterConfig(method=method, shrinkage=0.3))
    before = _eer(_unit(test_x.astype(np.float64)), test_y)
    after = _eer(linear.apply(test_x), test_y)
    assert after * gain < before, (before, after)


def test_singletons_count_for_the_mean_but_not_within_class() -> None:
    x, y = _population(0, people=10, shots=3)
    singles, _ = _population(2, people=50, shots=1)
    labels = np.r_[y, [f"s{i}" for i in range(50)]]
    linear = fit_adapter(np.r_[x, singles], labels, AdapterConfig())
    assert linear.fit.images == 80
    assert linear.fit.identities == 60
    assert linear.fit.within_identities == 10


def test_center_is_a_translation() -> None:
    x, y = _population(0, people=5, shots=2)
    linear = fit_adapter(x, y, AdapterConfig(method=AdapterMethod.CENTER))
    np.testing.assert_allclose(linear.weight, np.eye(DIM))
    np.testing.assert_allclose(linear.bias, -_unit(x.astype(np.float64)).mean(axis=0))


def test_lda_keeps_output_dim() -> None:
    x, y = _population(0, people=20, shots=3)
    linear = fit_adapter(x, y, AdapterConfig(method=AdapterMethod.LDA, output_dim=8))
    assert linear.weight.shape == (DIM, 8)
    assert linear.apply(x).shape == (60, 8)
    with pytest.raises(ValueError, match="output_dim 64 exceeds the embedding dimension 32"):
        fit_adapter(x, y, AdapterConfig(method=AdapterMethod.LDA, output_dim=64))


def test_bad_fit_data_is_refused() -> None:
    x, y = _population(0, people=3, shots=2)
    with pytest.raises(ValueError, match="one label per embedding row"):
        fit_adapter(x, y[:-1], AdapterConfig())
    with pytest.raises(ValueError, match="needs at least 5 identities with two or more images"):
        fit_adapter(x, y, AdapterConfig())
    bad = x.copy()
    bad[1, 4] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        fit_adapter(bad, y, AdapterConfig(method=AdapterMethod.CENTER))


def test_selection_prefers_the_setting_that_works_on_unseen_people() -> None:
    # Strong per-photo nuisance: trusting the within-class estimate (0.0) beats ignoring it
    # (1.0), whichever order the grid lists them in.
    x, y = _population(0, people=60, shots=4)
    labels = np.asarray([f"site/{label}" for label in y])
    for grid in (((1.0, 0.0), (1.0, 1.0)), ((1.0, 1.0), (1.0, 0.0))):
        selection = select_config(x, labels, grid=grid, fmr=1e-2, inner_splits=2, seed=1)
        assert set(selection.scores) == set(grid)
        assert selection.scores[(1.0, 0.0)] < selection.scores[(1.0, 1.0)]
        assert (selection.config.whiten_shrinkage, selection.config.shrinkage) == (1.0, 0.0)
    # Deterministic for a seed; other fields of the base configuration are kept.
    base = AdapterConfig(min_identities=3)
    a = select_config(x, labels, base=base, inner_splits=2, seed=5)
    b = select_config(x, labels, base=base, inner_splits=2, seed=5)
    assert a.scores == b.scores
    assert a.config.min_identities == 3
    assert a.scores[(a.config.whiten_shrinkage, a.config.shrinkage)] == min(a.scores.values())


def test_selection_refuses_too_few_people() -> None:
    x, y = _population(0, people=3, shots=3)
    with pytest.raises(SelectionError, match="too few identities with two or more images"):
        select_config(x, y, base=AdapterConfig(min_identities=2))
    with pytest.raises(ValueError, match="one label per embedding row"):
        select_config(x, y[:-1])


def test_adapted_pack_is_a_new_contract_and_keeps_the_base(
    default_pack: Path, tmp_path: Path
) -> None:
    x, y = _population(0, people=20, shots=3)
    x = np.pad(x, ((0, 0), (0, 128 - DIM)))
    linear = fit_adapter(x, y, AdapterConfig())
    provenance = AdapterProvenance(source="synthetic")
    pack = build_adapted_pack(default_pack, linear, tmp_path, "adapted", provenance)
    manifest = verify_pack(pack)
    base = load_manifest(default_pack)
    assert manifest.contract_id != base.contract_id
    entry = manifest.file(Task.ADAPTER)
    assert entry is not None and entry.wrapper == "linear_adapter"
    assert entry.commercial_use is False and not manifest.commercial_use
    assert {f.path for f in base.files} < {f.path for f in manifest.files}
    assert not (pack / "calibration.yaml").exists()
    # Refusals leave nothing behind: an existing name, a pack that already has an adapter.
    with pytest.raises(ModelError, match="already exists"):
        build_adapted_pack(default_pack, linear, tmp_path, "adapted", provenance)
    with pytest.raises(ModelError, match="already has an adapter"):
        build_adapted_pack(pack, linear, tmp_path, "twice", provenance)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted"]


def test_train_adapter_command_builds_a_pack_the_engine_runs(
    default_pack: Path, tmp_path: Path
) -> None:
    data = write_set(tmp_path / "faces")
    models = tmp_path / "models"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "adapter",
            "--pack",
            str(default_pack),
            "--data",
            str(data),
            "--out",
            "jifang-open-site",
            "--model-dir",
            str(models),
            "--min-identities",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "jifang-open-site" in result.output
    engine = FaceEngine(models / "jifang-open-site", threads=1)
    assert engine.adapter is not None
    embedded = {}
    for person in ("astronaut", "cameraman"):
        vectors = []
        for image_path in sorted((data / person).iterdir()):
            acquired = engine.acquire(read_image(str(image_path)))
            assert acquired is not None
            vectors.append(engine.embed(acquired.image, acquired.face))
        embedded[person] = np.stack(vectors)
    same = embedded["astronaut"] @ embedded["astronaut"].T
    other = embedded["astronaut"] @ embedded["cameraman"].T
    assert same[np.triu_indices(4, 1)].min() > other.max()


def test_train_adapter_select_prints_the_table_and_uses_the_choice(
    default_pack: Path, tmp_path: Path
) -> None:
    # Four labelled "people" with two photos each (two per real face: plumbing, not accuracy).
    data = write_set(tmp_path / "faces")
    site = tmp_path / "site"
    for person in ("astronaut", "cameraman"):
        for i, image in enumerate(sorted((data / person).iterdir())):
            folder = site / f"{person}-{i // 2}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / image.name).write_bytes(image.read_bytes())
    models = tmp_path / "models"
    args = ["--pack", str(default_pack), "--data", str(site), "--model-dir", str(models)]
    result = CliRunner().invoke(
        app,
        ["train", "adapter", *args, "--out", "sel", "--select", "--min-identities", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "held-out FNMR@1e-3" in result.output
    chosen = [line for line in result.output.splitlines() if line.endswith(" <")]
    assert len(chosen) == 1
    whiten, within = (float(v) for v in chosen[0].split()[:2])
    source = load_manifest(models / "sel").file(Task.ADAPTER)
    assert source is not None
    assert f"whiten shrinkage {whiten}, within shrinkage {within}" in source.source

    # An explicit shrinkage is used as given: no selection.
    result = CliRunner().invoke(
        app,
        [
            "train",
            "adapter",
            *args,
            "--out",
            "given",
            "--shrinkage",
            "0.5",
            "--min-identities",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out FNMR" not in result.output
    entry = load_manifest(models / "given").file(Task.ADAPTER)
    assert entry is not None
    assert "whiten shrinkage 0.8, within shrinkage 0.5" in entry.source

    # Two people cannot be cross-validated: the command says so and uses the built-in values.
    result = CliRunner().invoke(
        app,
        ["train", "adapter", *args[:2], "--data", str(data), *args[4:], "--out", "small"]
        + ["--min-identities", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "note: too few identities with two or more images" in result.output
    assert (models / "small").is_dir()


def test_train_adapter_refuses_bad_options(default_pack: Path, tmp_path: Path) -> None:
    data = write_set(tmp_path / "faces")
    runner = CliRunner()
    args = [
        "train",
        "adapter",
        "--pack",
        str(default_pack),
        "--data",
        str(data),
        "--out",
        "x",
        "--model-dir",
        str(tmp_path / "m"),
    ]
    result = runner.invoke(app, [*args, "--shrinkage", "1.5"])
    assert result.exit_code == 2
    assert "shrinkage" in result.output
    # Two people only: WCCN cannot estimate within-class variation with the default minimum.
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "needs at least 5 identities" in result.output
    assert not (tmp_path / "m" / "x").exists()
    result = runner.invoke(app, [*args[:5], str(tmp_path / "nowhere"), *args[6:]])
    assert result.exit_code == 1
    assert "nowhere" in result.output


def test_adapter_fits_and_exports_without_torch(tmp_path: Path) -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        from pathlib import Path
        import numpy as np
        from training.adapt import AdapterConfig, fit_adapter, export_onnx
        from models.runtime.adapter import LinearAdapter
        rng = np.random.default_rng(0)
        x = rng.standard_normal((60, 16)).astype(np.float32)
        y = np.repeat(np.arange(20), 3).astype(str)
        linear = fit_adapter(x, y, AdapterConfig())
        path = export_onnx(linear, Path({str(tmp_path)!r}) / "a.onnx")
        out = LinearAdapter(path, 16, 16).transform(x)
        assert out.shape == (60, 16)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_mirrored_recognizer_matches_reference_and_is_mirror_symmetric(
    default_pack: Path, engine: FaceEngine, tmp_path: Path
) -> None:
    from models.runtime.dlib_recognizer import DlibResNetRecognizer
    from models.vectors import mirror_mean
    from tests.models.faces import astronaut
    from training.adapt import mirror_recognizer

    recognizer = load_manifest(default_pack).file(Task.RECOGNIZER)
    assert recognizer is not None
    mirrored = DlibResNetRecognizer(
        mirror_recognizer(default_pack / recognizer.path, tmp_path / "m.onnx"), threads=1
    )
    acquired = engine.acquire(astronaut())
    assert acquired is not None
    chip = engine.align(acquired.image, acquired.face)
    noise = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    chips = np.concatenate([chip[None], noise])
    flipped = np.ascontiguousarray(chips[:, :, ::-1])
    plain = engine.recognizer
    expected = mirror_mean(plain.embed_chips(chips), plain.embed_chips(flipped))
    np.testing.assert_allclose(mirrored.embed_chips(chips), expected, atol=1e-5)
    # A face and its mirror image now get the same descriptor; the plain recognizer differs.
    np.testing.assert_allclose(
        mirrored.embed_chips(flipped), mirrored.embed_chips(chips), atol=1e-5
    )
    assert np.abs(plain.embed_chips(flipped) - plain.embed_chips(chips)).max() > 1e-3


def test_mirror_only_pack_loads_in_the_engine(default_pack: Path, tmp_path: Path) -> None:
    provenance = AdapterProvenance(source="none")
    pack = build_adapted_pack(default_pack, None, tmp_path, "mirror", provenance, mirror=True)
    manifest = verify_pack(pack)
    recognizer = manifest.file(Task.RECOGNIZER)
    assert recognizer is not None and recognizer.path == "recognizer_mirror.onnx"
    assert recognizer.commercial_use  # wrapping keeps the recognizer's own licence
    assert manifest.file(Task.ADAPTER) is None
    assert not (pack / "recognizer.onnx").exists()
    assert manifest.contract_id != load_manifest(default_pack).contract_id
    assert FaceEngine(pack, threads=1).adapter is None
    with pytest.raises(ModelError, match="nothing to add"):
        build_adapted_pack(default_pack, None, tmp_path, "empty", provenance)


def test_train_adapter_with_mirror(default_pack: Path, tmp_path: Path) -> None:
    data = write_set(tmp_path / "faces")
    models = tmp_path / "models"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "adapter",
            "--pack",
            str(default_pack),
            "--data",
            str(data),
            "--out",
            "site",
            "--model-dir",
            str(models),
            "--min-identities",
            "2",
            "--mirror",
        ],
    )
    assert result.exit_code == 0, result.output
    engine = FaceEngine(models / "site", threads=1)
    assert engine.adapter is not None
    assert engine.manifest.file(Task.RECOGNIZER).path == "recognizer_mirror.onnx"  # type: ignore[union-attr]
