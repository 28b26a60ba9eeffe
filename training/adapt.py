"""Population adaptation: a linear transform of recognizer embeddings, fitted with numpy.

The recognizer (dlib ResNet v1) was trained mostly on Western faces, so on Chinese faces
its embeddings crowd together: impostors score high and the threshold at a low FMR rejects
many genuine users. A linear map fitted on labelled faces of the target population fixes
much of that without retraining the network:

- `center`: subtract the population's mean embedding (cosine then measures differences
  between people of this population, not their shared offset from the training mean);
- `whiten`: centre, then whiten the population's total covariance (no labels needed, so a
  set of one photo per person is enough): directions along which this population's faces
  all differ little, and which the recognizer therefore packs tightly, are stretched;
- `wccn`: `whiten`, then within-class covariance normalisation: directions in which one
  person's photos vary (pose, lighting, glasses) are shrunk, so that they count less;
- `lda`: centre, then project onto the directions where people differ most relative to how
  much one person varies (a generalised eigenproblem of total vs within-class covariance),
  keeping `output_dim` of them.

The covariances of a few dozen people (or a few hundred photos) are poorly estimated in 128
dimensions, so both are shrunk towards a multiple of the identity. Images of identities with a single image
(e.g. a set of singletons) still count for the mean and the total covariance.

The map is exported as a small ONNX graph (L2-normalise, MatMul, Add) inside a new pack
that copies the base pack's files; the new pack has its own embedding contract id. No
torch: this runs on a site machine with the edge runtime's dependencies only.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from models.errors import ModelError
from models.manifest import (
    EmbeddingSpec,
    FileEntry,
    PackManifest,
    compute_contract_id,
    sha256_file,
    verify_pack,
    write_manifest,
)
from models.matching import DEFAULT_TOP, MIN_DISTRACTORS, identity_key
from models.store import verified_manifest
from models.types import Task
from models.vectors import l2_normalize, mirror_mean

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapter.onnx"
ADAPTER_WRAPPER = "linear_adapter"
COHORT_FILE = "cohort.npz"
COHORT_WRAPPER = "as_norm_cohort"
ONNX_OPSET = 17
EIGEN_FLOOR = 1e-10
"""Relative floor on covariance eigenvalues before inverting (numerical safety only)."""

FloatMatrix = npt.NDArray[np.float64]


class AdapterMethod(StrEnum):
    """Which linear map to fit."""

    CENTER = "center"
    WHITEN = "whiten"
    WCCN = "wccn"
    LDA = "lda"


class AdapterConfig(BaseModel):
    """How an adapter is fitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: AdapterMethod = Field(
        default=AdapterMethod.WCCN,
        description="center, whiten, wccn or lda (see training.adapt)",
    )
    # `jifang train adapter` chooses both shrinkages on the site's own photos (select_config)
    # unless they are given; these values are used when the photos are too few to choose.
    whiten_shrinkage: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="whiten, wccn: weight of the isotropic prior in the total covariance: "
        "0 trusts the sample estimate, 1 ignores it (no whitening)",
    )
    shrinkage: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="wccn, lda: weight of the isotropic prior in the within-class covariance: "
        "0 trusts the sample estimate, 1 ignores it",
    )
    output_dim: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="lda only: directions kept (default: all, i.e. the input dimension)",
    )
    min_identities: int = Field(
        default=5,
        ge=2,
        le=100_000,
        description="identities with two or more images needed to estimate within-class "
        "variation (wccn, lda)",
    )


@dataclass(frozen=True)
class FitData:
    """What an adapter was fitted on."""

    images: int
    identities: int
    within_identities: int
    """Identities with two or more images (the ones that inform within-class variation)."""


@dataclass(frozen=True)
class LinearMap:
    """adapted = normalise(x) @ weight + bias; the engine L2-normalises the result."""

    weight: FloatMatrix
    """input_dim x output_dim."""
    bias: npt.NDArray[np.float64]
    method: AdapterMethod
    fit: FitData

    @property
    def input_dim(self) -> int:
        """Dimension of the recognizer's embeddings."""
        return int(self.weight.shape[0])

    @property
    def output_dim(self) -> int:
        """Dimension of the adapted embeddings."""
        return int(self.weight.shape[1])

    def apply(self, raw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The numpy reference of the ONNX graph, L2-normalised like the engine does."""
        x = l2_normalize(raw)
        y = x @ self.weight + self.bias
        return l2_normalize(y)


def _within_scatter(x: FloatMatrix, codes: npt.NDArray[np.intp]) -> tuple[FloatMatrix, int, int]:
    """Pooled within-class covariance over identities with two or more images."""
    d = x.shape[1]
    scatter = np.zeros((d, d))
    used_images = 0
    used_ids = 0
    for code in np.unique(codes):
        rows = x[codes == code]
        if len(rows) < 2:
            continue
        centred = rows - rows.mean(axis=0)
        scatter += centred.T @ centred
        used_images += len(rows)
        used_ids += 1
    dof = used_images - used_ids
    return (scatter / dof if dof > 0 else scatter), used_ids, used_images


def _shrunk(cov: FloatMatrix, shrinkage: float) -> FloatMatrix:
    d = cov.shape[0]
    prior = np.trace(cov) / d * np.eye(d)
    return np.asarray((1.0 - shrinkage) * cov + shrinkage * prior, np.float64)


def _inverse_sqrt(cov: FloatMatrix) -> FloatMatrix:
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, EIGEN_FLOOR * max(float(values.max()), EIGEN_FLOOR))
    return np.asarray((vectors / np.sqrt(values)) @ vectors.T)


def fit_adapter(
    raw: npt.ArrayLike, labels: list[str] | npt.NDArray[np.str_], config: AdapterConfig
) -> LinearMap:
    """Fit a linear map on labelled raw recognizer embeddings (one row per image)."""
    x = np.asarray(raw, np.float64)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ValueError(f"need one label per embedding row: {x.shape} vs {len(labels)} labels")
    if x.shape[0] < 2:
        raise ValueError("need at least two embeddings to fit an adapter")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain non-finite values")
    x = l2_normalize(x)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    mean = x.mean(axis=0)
    centred = x - mean
    d = x.shape[1]
    within, within_ids, _ = _within_scatter(x, codes)
    fit = FitData(int(x.shape[0]), int(codes.max() + 1), within_ids)
    needs_labels = config.method in (AdapterMethod.WCCN, AdapterMethod.LDA)
    if needs_labels and within_ids < config.min_identities:
        raise ValueError(
            f"{config.method.value} needs at least {config.min_identities} identities with "
            f"two or more images to estimate within-class variation; the data has {within_ids}"
        )
    if config.method == AdapterMethod.CENTER:
        weight = np.eye(d)
    elif config.method == AdapterMethod.LDA:
        weight = _lda(centred, _shrunk(within, config.shrinkage), config.output_dim or d)
    else:
        total = centred.T @ centred / (len(x) - 1)
        weight = _inverse_sqrt(_shrunk(total, config.whiten_shrinkage))
        if config.method == AdapterMethod.WCCN:
            # Within-class variation measured after whitening, in the whitened space.
            whitened_within = weight @ within @ weight
            weight = weight @ _inverse_sqrt(_shrunk(whitened_within, config.shrinkage))
    bias = -mean @ weight
    logger.info(
        "fitted %s adapter on %d images of %d identities (%d with several images): %d -> %d",
        config.method.value,
        fit.images,
        fit.identities,
        fit.within_identities,
        d,
        weight.shape[1],
    )
    return LinearMap(weight, bias, config.method, fit)


SELECTION_GRID: tuple[tuple[float, float], ...] = tuple(
    (w, b) for w in (0.6, 0.8, 1.0) for b in (0.5, 0.7, 0.9)
)
"""(whiten_shrinkage, shrinkage) pairs `select_config` chooses from by default."""


class SelectionError(ValueError):
    """The fitting data is too small to choose settings by cross-validation."""


@dataclass(frozen=True)
class Selection:
    """The configuration chosen by identity-split cross-validation on the fitting data."""

    config: AdapterConfig
    scores: dict[tuple[float, float], float]
    """Mean held-out FNMR at `fmr` for every (whiten_shrinkage, shrinkage) tried."""
    fmr: float
    inner_splits: int


def _held_out_masks(
    groups: npt.NDArray[np.str_], labels: npt.NDArray[np.str_], splits: int, seed: int
) -> list[npt.NDArray[np.bool_]]:
    """Per inner split: half (floor) of each group's multi-image identities held out."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(splits):
        held = np.zeros(len(labels), bool)
        for group in np.unique(groups):
            identities, counts = np.unique(labels[groups == group], return_counts=True)
            several = identities[counts >= 2]
            held |= np.isin(labels, rng.permutation(several)[: len(several) // 2])
        masks.append(held)
    return masks


def select_config(
    raw: npt.ArrayLike,
    labels: list[str] | npt.NDArray[np.str_],
    base: AdapterConfig | None = None,
    grid: tuple[tuple[float, float], ...] = SELECTION_GRID,
    fmr: float = 1e-3,
    inner_splits: int = 3,
    seed: int = 0,
) -> Selection:
    """Choose the shrinkages from the fitting data alone, by splitting it by identity.

    Labels may carry a group prefix (`<set>/<identity>`, as `embed_raw` writes them): each
    group's identities with two or more images are halved at random `inner_splits` times;
    every candidate is fitted on the rest (singletons included) and scored by FNMR at `fmr`
    on the held-out identities of each group, averaged over groups and splits. The held-out
    people play no part in their own score's fit, so the choice says how a setting does on
    people it has not seen. Ties go to the earlier grid entry.
    """
    # Imported here: calibration's metrics are the project's one definition of FNMR at FMR.
    from calibration.metrics import pair_scores, rates_at, threshold_at_fmr

    x = np.asarray(raw, np.float64)
    names = np.asarray(labels, dtype=str)
    if x.ndim != 2 or x.shape[0] != len(names):
        raise ValueError(f"need one label per embedding row: {x.shape} vs {len(names)} labels")
    if not grid:
        raise ValueError("the selection grid is empty")
    base = base or AdapterConfig()
    groups = np.asarray([n.rsplit("/", 1)[0] if "/" in n else "" for n in names], dtype=str)
    masks = _held_out_masks(groups, names, inner_splits, seed)
    for held in masks:
        if len(np.unique(names[held])) < 2:
            raise SelectionError(
                "too few identities with two or more images to choose the shrinkages by "
                "cross-validation (need at least four)"
            )
    scores: dict[tuple[float, float], float] = {}
    for whiten, within in grid:
        config = base.model_copy(update={"whiten_shrinkage": whiten, "shrinkage": within})
        results = []
        for held in masks:
            linear = fit_adapter(x[~held], names[~held], config)
            for group in np.unique(groups[held]):
                rows = held & (groups == group)
                genuine, impostor = pair_scores(
                    linear.apply(x[rows]).astype(np.float32), list(names[rows])
                )
                if genuine.size and impostor.size:
                    results.append(rates_at(genuine, impostor, threshold_at_fmr(impostor, fmr))[0])
        scores[(whiten, within)] = float(np.mean(results)) if results else float("nan")
    best = min(grid, key=lambda key: (np.nan_to_num(scores[key], nan=np.inf), grid.index(key)))
    chosen = base.model_copy(update={"whiten_shrinkage": best[0], "shrinkage": best[1]})
    logger.info(
        "selected whiten shrinkage %.2f, within shrinkage %.2f (held-out FNMR@%g %.4f)",
        best[0],
        best[1],
        fmr,
        scores[best],
    )
    return Selection(chosen, scores, fmr, inner_splits)


def _lda(centred: FloatMatrix, sw: FloatMatrix, keep: int) -> FloatMatrix:
    """Directions maximising total over within-class variance, scaled to unit within-class."""
    d = centred.shape[1]
    if keep > d:
        raise ValueError(f"output_dim {keep} exceeds the embedding dimension {d}")
    total = centred.T @ centred / max(len(centred) - 1, 1)
    whiten = _inverse_sqrt(sw)
    values, vectors = np.linalg.eigh(whiten @ total @ whiten)
    order = np.argsort(values)[::-1][:keep]
    return np.asarray(whiten @ vectors[:, order])


def export_onnx(linear: LinearMap, path: Path) -> Path:
    """Write the map as an ONNX graph: LpNormalization, MatMul, Add (float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from models.runtime.adapter import INPUT_NAME, OUTPUT_NAME

    weight = numpy_helper.from_array(linear.weight.astype(np.float32), "weight")
    bias = numpy_helper.from_array(linear.bias.astype(np.float32), "bias")
    nodes = [
        helper.make_node("LpNormalization", [INPUT_NAME], ["unit"], axis=1, p=2),
        helper.make_node("MatMul", ["unit", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        f"jifang_{linear.method.value}_adapter",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", linear.input_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", linear.output_dim])],
        initializer=[weight, bias],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="jifang"
    )
    model.ir_version = 8  # readable by every onnxruntime the edge may run
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


MIRROR_FILE = "recognizer_mirror.onnx"


def mirror_recognizer(src: Path, dst: Path) -> Path:
    """Wrap a recognizer graph so that it embeds each chip and its mirror image and returns
    the mean of the two L2-normalised descriptors (same input and output names and shapes).

    A face and its mirror image are the same person; averaging the two views cancels part of
    the recognizer's left/right asymmetry (pose, side lighting) at twice the embedding cost.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    (chip,) = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if outputs != ["descriptor"]:
        raise ModelError(f"{src.name}: expected one output 'descriptor', got {outputs}")
    dim = graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if dim < 1:
        raise ModelError(f"{src.name}: descriptor dimension is not fixed in the graph")
    pair, pair_out = "mirror_pair_chip", "mirror_pair_descriptor"
    for node in graph.node:
        node.input[:] = [pair if name == chip else name for name in node.input]
        node.output[:] = [pair_out if name == "descriptor" else name for name in node.output]
    int64_min = np.iinfo(np.int64).min
    constants = {
        "mirror_starts": [-1],
        "mirror_ends": [int64_min],
        "mirror_axes": [3],  # NCHW: flip the width axis
        "mirror_steps": [-1],
        "mirror_pair_shape": [2, -1, dim],
    }
    for name, values in constants.items():
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
    before = [
        helper.make_node(
            "Slice",
            [chip, "mirror_starts", "mirror_ends", "mirror_axes", "mirror_steps"],
            ["mirror_chip"],
        ),
        helper.make_node("Concat", [chip, "mirror_chip"], [pair], axis=0),
    ]
    after = [
        helper.make_node("LpNormalization", [pair_out], ["mirror_unit"], axis=1, p=2),
        helper.make_node("Reshape", ["mirror_unit", "mirror_pair_shape"], ["mirror_views"]),
        helper.make_node("ReduceMean", ["mirror_views"], ["descriptor"], axes=[0], keepdims=0),
    ]
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString())
    return dst


@dataclass(frozen=True)
class AdapterProvenance:
    """What the new pack's manifest says about the adapter."""

    source: str
    """The data it was fitted on (folder, identity and image counts)."""
    license: str = "LicenseRef-jifang-internal"
    commercial_use: bool = False
    """False by default: the fitting data's terms decide, and research sets forbid it."""


@dataclass(frozen=True)
class CohortRows:
    """The distractor cohort a new pack carries (see `cohort_rows`)."""

    embeddings: npt.NDArray[np.float32]
    identities: tuple[str, ...]
    """`models.matching.identity_key` of each row's person."""


def cohort_rows(fit_set: FitSet, linear: LinearMap | None) -> CohortRows | None:
    """One face per person of the fitting data (his first image), embedded as the new pack
    embeds it: the cohort of score normalisation at the gate. None with fewer than
    `models.matching.MIN_DISTRACTORS` people, too few for stable cohort statistics."""
    first: dict[str, int] = {}
    for index, label in enumerate(fit_set.labels):
        first.setdefault(label, index)
    if len(first) < MIN_DISTRACTORS:
        return None
    raw = fit_set.raw[list(first.values())]
    rows = linear.apply(raw) if linear is not None else l2_normalize(raw)
    return CohortRows(np.asarray(rows, np.float32), tuple(identity_key(label) for label in first))


def build_adapted_pack(
    base_pack: Path,
    linear: LinearMap | None,
    model_dir: Path,
    name: str,
    provenance: AdapterProvenance,
    force: bool = False,
    mirror: bool = False,
    cohort: CohortRows | None = None,
) -> Path:
    """Copy the base pack's files plus the adapter into a new pack (atomically).

    With `mirror`, the recognizer is replaced by its mirrored wrapper (see
    `mirror_recognizer`); the adapter must then have been fitted on mirrored embeddings.
    `linear` may be None for a mirror-only pack. With `cohort` (embedded by the new pack's
    recognizer and adapter), the pack carries it for score normalisation.
    """
    if linear is None and not mirror and cohort is None:
        raise ModelError("nothing to add: give an adapter, the mirror option or a cohort")
    base = verified_manifest(base_pack)
    if base.file(Task.ADAPTER) is not None:
        raise ModelError(f"{base.name}: already has an adapter; fit on a pack without one")
    recognizer = base.file(Task.RECOGNIZER)
    if recognizer is None:
        raise ModelError(f"{base.name}: has no recognizer")
    if linear is not None and linear.input_dim != base.embedding.dim:
        raise ModelError(
            f"{base.name}: adapter takes {linear.input_dim}-d embeddings, "
            f"the pack makes {base.embedding.dim}-d"
        )
    if cohort is not None:
        dim = linear.output_dim if linear is not None else base.embedding.dim
        if cohort.embeddings.ndim != 2 or cohort.embeddings.shape[1] != dim:
            raise ModelError(
                f"cohort rows of shape {list(cohort.embeddings.shape)}: the pack makes {dim}-d "
                "embeddings"
            )
    target = model_dir / name
    if target.exists() and not force:
        raise ModelError(f"{target}: already exists (use --force to replace it)")
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".adapt-") as tmp:
        work = Path(tmp) / name
        work.mkdir()
        for entry in base.files:
            src = base_pack / entry.path
            if src.is_file():
                (work / entry.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, work / entry.path)
        files = list(base.files)
        if mirror:
            recognizer_path = work / MIRROR_FILE
            mirror_recognizer(base_pack / recognizer.path, recognizer_path)
            (work / recognizer.path).unlink()
            files = [
                FileEntry(
                    **{
                        **recognizer.model_dump(),
                        "path": MIRROR_FILE,
                        "sha256": sha256_file(recognizer_path),
                        "source": recognizer.source + "; wrapped by jifang: mean of the unit "
                        "descriptors of the chip and its mirror image",
                    }
                )
                if f.task == Task.RECOGNIZER
                else f
                for f in files
            ]
        if linear is not None:
            files.append(_adapter_entry(linear, work, provenance))
        if cohort is not None:
            files.append(_cohort_entry(cohort, work, provenance))
        all_files = tuple(files)
        spec = EmbeddingSpec(
            **{
                **base.embedding.model_dump(),
                "dim": linear.output_dim if linear else base.embedding.dim,
            }
        )
        what = f"a {linear.method.value} adapter" if linear else "no adapter"
        manifest = PackManifest(
            name=name,
            version=base.version,
            description=f"{base.name} {base.version} with {what}"
            + (", mirrored recognizer" if mirror else "")
            + f" ({provenance.source})",
            built=date.today(),
            files=all_files,
            embedding=spec,
            contract_id=compute_contract_id(all_files, spec),
        )
        # The base pack's calibration is not copied: its thresholds were measured for the
        # base contract and mean nothing for adapted embeddings.
        write_manifest(work, manifest)
        verify_pack(work)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    logger.info("built %s (contract %s) from %s", name, manifest.contract_id, base.name)
    return target


def _adapter_entry(linear: LinearMap, work: Path, provenance: AdapterProvenance) -> FileEntry:
    export_onnx(linear, work / ADAPTER_FILE)
    return FileEntry(
        path=ADAPTER_FILE,
        task=Task.ADAPTER,
        wrapper=ADAPTER_WRAPPER,
        sha256=sha256_file(work / ADAPTER_FILE),
        license=provenance.license,
        commercial_use=provenance.commercial_use,
        source=provenance.source,
        params={
            "input_dim": linear.input_dim,
            "output_dim": linear.output_dim,
            "method": linear.method.value,
        },
    )


def _cohort_entry(cohort: CohortRows, work: Path, provenance: AdapterProvenance) -> FileEntry:
    path = work / COHORT_FILE
    np.savez(path, embeddings=cohort.embeddings, identities=np.array(cohort.identities))
    return FileEntry(
        path=COHORT_FILE,
        task=Task.COHORT,
        wrapper=COHORT_WRAPPER,
        sha256=sha256_file(path),
        license=provenance.license,
        commercial_use=provenance.commercial_use,
        source=f"one face of each of {len(cohort.identities)} people of the fitting data, "
        f"embedded by this pack ({provenance.source})",
        params={"top": DEFAULT_TOP},
    )


@dataclass(frozen=True)
class FitSet:
    """Raw recognizer embeddings of labelled images, ready to fit on."""

    raw: npt.NDArray[np.float32]
    labels: list[str]
    skipped: int
    """Images where no face was acquired or that could not be read."""


def embed_raw(pack_dir: Path, data: Path, threads: int = 2, mirror: bool = False) -> FitSet:
    """Raw (pre-adapter) embeddings of every image under `data`, labelled `<set>/<identity>`.

    Labels carry the set name so that identity folders with the same name in two sets are
    kept apart. With `mirror`, each row is what the mirrored recognizer would output.
    """
    from calibration.datasets import find_sets
    from models.engine import FaceEngine
    from models.runtime.image import read_image

    engine = FaceEngine(pack_dir, threads=threads)
    if engine.adapter is not None:
        raise ModelError(f"{engine.manifest.name}: already has an adapter; fit on its base pack")
    rows: list[npt.NDArray[np.float32]] = []
    labels: list[str] = []
    skipped = 0
    for face_set in find_sets(data):
        items = zip(face_set.images, face_set.labels, strict=True)
        for path, identity in tqdm(
            items, total=len(face_set.images), desc=f"embed {face_set.name}", unit="img"
        ):
            try:
                image = read_image(str(path))
            except ModelError as err:
                logger.warning("%s", err)
                skipped += 1
                continue
            acquired = engine.acquire(image)
            if acquired is None:
                logger.info("%s: no face, skipped", path)
                skipped += 1
                continue
            chip = engine.align(acquired.image, acquired.face)
            if mirror:
                both = engine.recognizer.embed_chips(np.stack([chip, chip[:, ::-1]]))
                rows.append(mirror_mean(both[:1], both[1:])[0].astype(np.float32))
            else:
                rows.append(engine.recognizer.embed_chips(chip[None])[0])
            labels.append(f"{face_set.name}/{identity}")
    if not rows:
        raise ValueError(f"{data}: no face found in any image")
    return FitSet(np.stack(rows), labels, skipped)
