"""Read dlib's regression-tree shape predictor (`shape_predictor_*.dat`) without dlib.

The file is dlib's `serialize(shape_predictor)`: no header, no compression, in this order:
an integer version (1); `initial_shape` (a float column vector, x0 y0 x1 y1 ...); `forests`
(one list of regression trees per cascade level; a tree is its splits, each idx1 idx2 thresh,
then its leaf vectors); `anchor_idx` (per level, the landmark each feature pixel hangs from);
`deltas` (per level, each feature pixel's offset from its anchor in mean-shape space).

Primitives (see docs/model-sources.md): an integer is a control byte (low nibble = byte
count, bit 0x80 = negative) then that many little-endian magnitude bytes; a float is an
integer mantissa then an integer exponent (value = m * 2**e); a std::vector is its length then
its items; a dlib matrix is -rows, -cols (negated to mark the current format) then items.

The runtime never reads `.dat` files: `save_npz` writes the plain `.npz` that model packs carry.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.convert.dlib_format import DlibFormatError, DlibReader

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]

FORMAT_VERSION = 1
"""The only shape_predictor serialization version dlib has written."""

# dlib reserves these exponents for non-finite floats; a landmark model never holds one.


class ShapePredictorFormatError(ValueError):
    """The file is not a dlib shape predictor this reader understands."""


@dataclass(frozen=True)
class ShapePredictorModel:
    """A dlib cascade of regression trees, as dense numpy arrays.

    C = cascade levels, T = trees per level, S = splits per tree (2**depth - 1),
    L = leaves per tree (S + 1), P = landmarks, F = feature pixels per level.
    Trees are complete binary trees in breadth-first order: node i's children are 2i+1
    (taken when pixel[idx1] - pixel[idx2] > thresh) and 2i+2.
    """

    initial_shape: FloatArray
    """[P, 2] mean shape, in the unit square of the face box."""
    split_idx1: IntArray
    """[C, T, S] first feature pixel of each split."""
    split_idx2: IntArray
    """[C, T, S] second feature pixel of each split."""
    split_thresh: FloatArray
    """[C, T, S] split threshold on the intensity difference."""
    leaf_values: FloatArray
    """[C, T, L, P, 2] shape increment stored in each leaf."""
    anchor_idx: IntArray
    """[C, F] landmark each feature pixel is placed relative to."""
    deltas: FloatArray
    """[C, F, 2] feature pixel offset from its anchor, in mean-shape units."""

    @property
    def num_parts(self) -> int:
        """Number of landmarks the model predicts."""
        return int(self.initial_shape.shape[0])

    @property
    def tree_depth(self) -> int:
        """Depth of every tree (number of splits on a root-to-leaf path)."""
        return int(self.split_idx1.shape[2] + 1).bit_length() - 1

    def validate(self) -> None:
        """Raise ShapePredictorFormatError unless the arrays are mutually consistent."""
        parts = self.num_parts
        if self.initial_shape.shape != (parts, 2) or parts < 1:
            raise ShapePredictorFormatError(f"initial_shape has shape {self.initial_shape.shape}")
        levels, trees, splits = self.split_idx1.shape
        leaves = splits + 1
        if leaves & (leaves - 1):
            raise ShapePredictorFormatError(f"{splits} splits per tree is not a complete tree")
        expected = {
            "split_idx2": (levels, trees, splits),
            "split_thresh": (levels, trees, splits),
            "leaf_values": (levels, trees, leaves, parts, 2),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ShapePredictorFormatError(
                    f"{name} has shape {getattr(self, name).shape}, expected {shape}"
                )
        if self.anchor_idx.shape[0] != levels or self.deltas.shape != (*self.anchor_idx.shape, 2):
            raise ShapePredictorFormatError(
                f"anchor_idx {self.anchor_idx.shape} and deltas {self.deltas.shape} "
                f"do not match {levels} cascade levels"
            )
        features = self.anchor_idx.shape[1]
        for name in ("split_idx1", "split_idx2"):
            idx = getattr(self, name)
            if idx.size and (idx.min() < 0 or idx.max() >= features):
                raise ShapePredictorFormatError(f"{name} points outside the {features} pixels")
        if self.anchor_idx.size and (self.anchor_idx.min() < 0 or self.anchor_idx.max() >= parts):
            raise ShapePredictorFormatError("anchor_idx points outside the landmarks")


class _Reader:
    """dlib's primitive reader (models.convert.dlib_format) with this format's error messages."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._inner = DlibReader(data)

    @property
    def pos(self) -> int:
        """Current byte offset."""
        return self._inner.offset

    def fail(self, what: str, at: int | None = None) -> ShapePredictorFormatError:
        offset = self.pos if at is None else at
        return ShapePredictorFormatError(
            f"{what} at byte offset {offset} (file is {len(self.data)} bytes)"
        )

    def _translate(self, err: DlibFormatError, what: str, start: int) -> ShapePredictorFormatError:
        if "left" in str(err):
            return self.fail(f"unexpected end of file reading {what}", start)
        return self.fail(f"bad value reading {what} ({err})", start)

    def integer(self, what: str) -> int:
        start = self.pos
        try:
            return self._inner.read_int(what)
        except DlibFormatError as err:
            raise self._translate(err, what, start) from err

    def count(self, what: str, limit: int) -> int:
        start = self.pos
        value = self.integer(what)
        if not 0 <= value <= limit:
            raise self.fail(f"{what} = {value} is outside 0..{limit}", start)
        return value

    def real(self, what: str) -> float:
        start = self.pos
        try:
            value = self._inner.read_float(what)
        except DlibFormatError as err:
            raise self._translate(err, what, start) from err
        if not math.isfinite(value):
            raise self.fail(f"non-finite or out-of-range float in {what}", start)
        return value

    def column(self, what: str) -> list[float]:
        start = self.pos
        rows = self.integer(f"{what} rows")
        cols = self.integer(f"{what} cols")
        # Current dlib negates both sizes; an old-format file would have them positive.
        rows, cols = abs(rows), abs(cols)
        if cols != 1 or rows > 100_000:
            raise self.fail(f"{what} is a {rows}x{cols} matrix, expected a column vector", start)
        return [self.real(what) for _ in range(rows)]


# Sanity limits so a corrupt length fails fast instead of allocating gigabytes.
_MAX_LEVELS = 1000
_MAX_TREES = 100_000
_MAX_NODES = 1 << 16
_MAX_FEATURES = 1_000_000


_Split = tuple[int, int, float]


def _read_tree(reader: _Reader, where: str) -> tuple[list[_Split], list[list[float]]]:
    num_splits = reader.count(f"split count of {where}", _MAX_NODES)
    splits = [
        (
            reader.integer(f"split idx1 of {where}"),
            reader.integer(f"split idx2 of {where}"),
            reader.real(f"split thresh of {where}"),
        )
        for _ in range(num_splits)
    ]
    num_leaves = reader.count(f"leaf count of {where}", _MAX_NODES)
    leaves = [reader.column(f"leaf {i} of {where}") for i in range(num_leaves)]
    return splits, leaves


def parse_shape_predictor(data: bytes) -> ShapePredictorModel:
    """Decode the bytes of a dlib `shape_predictor` file."""
    reader = _Reader(data)
    version = reader.integer("version")
    if version != FORMAT_VERSION:
        raise reader.fail(f"unsupported shape_predictor version {version}", 0)
    initial = reader.column("initial_shape")
    if not initial or len(initial) % 2:
        raise reader.fail(f"initial_shape has {len(initial)} values, expected an even number")
    parts = len(initial) // 2

    num_levels = reader.count("cascade count", _MAX_LEVELS)
    idx1: list[list[list[int]]] = []
    idx2: list[list[list[int]]] = []
    thresh: list[list[list[float]]] = []
    leaf_values: list[list[list[list[float]]]] = []
    for level in range(num_levels):
        level_start = reader.pos
        num_trees = reader.count(f"tree count of level {level}", _MAX_TREES)
        if level and num_trees != len(idx1[0]):
            raise reader.fail(
                f"level {level} has {num_trees} trees, level 0 has {len(idx1[0])}", level_start
            )
        lvl1: list[list[int]] = []
        lvl2: list[list[int]] = []
        lvlt: list[list[float]] = []
        lvll: list[list[list[float]]] = []
        for tree in range(num_trees):
            tree_start = reader.pos
            where = f"tree {tree} of level {level}"
            splits, leaves = _read_tree(reader, where)
            if (
                len(leaves) != len(splits) + 1
                or (idx1 and len(splits) != len(idx1[0][0]))
                or (lvl1 and len(splits) != len(lvl1[0]))
            ):
                raise reader.fail(
                    f"{where} has {len(splits)} splits and {len(leaves)} leaves, "
                    "which breaks the fixed-depth layout",
                    tree_start,
                )
            if any(len(leaf) != 2 * parts for leaf in leaves):
                raise reader.fail(f"{where} has a leaf not of length {2 * parts}", tree_start)
            lvl1.append([s[0] for s in splits])
            lvl2.append([s[1] for s in splits])
            lvlt.append([s[2] for s in splits])
            lvll.append(leaves)
        idx1.append(lvl1)
        idx2.append(lvl2)
        thresh.append(lvlt)
        leaf_values.append(lvll)

    anchors = _read_nested_ints(reader, "anchor_idx", num_levels)
    deltas = _read_nested_points(reader, "deltas", num_levels)
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} unexpected trailing bytes")
    if any(len(a) != len(anchors[0]) for a in anchors) or [len(a) for a in anchors] != [
        len(d) for d in deltas
    ]:
        raise ShapePredictorFormatError("anchor_idx and deltas differ in length between levels")

    model = ShapePredictorModel(
        initial_shape=np.asarray(initial, np.float32).reshape(parts, 2),
        split_idx1=np.asarray(idx1, np.int32).reshape(num_levels, -1, len(idx1[0][0])),
        split_idx2=np.asarray(idx2, np.int32).reshape(num_levels, -1, len(idx1[0][0])),
        split_thresh=np.asarray(thresh, np.float32).reshape(num_levels, -1, len(idx1[0][0])),
        leaf_values=np.asarray(leaf_values, np.float32).reshape(
            num_levels, len(idx1[0]), len(idx1[0][0]) + 1, parts, 2
        ),
        anchor_idx=np.asarray(anchors, np.int32).reshape(num_levels, -1),
        deltas=np.asarray(deltas, np.float32).reshape(num_levels, -1, 2),
    )
    model.validate()
    return model


def _read_nested_ints(reader: _Reader, what: str, levels: int) -> list[list[int]]:
    start = reader.pos
    if reader.integer(f"{what} level count") != levels:
        raise reader.fail(f"{what} does not have {levels} levels", start)
    out = []
    for level in range(levels):
        n = reader.count(f"{what} length of level {level}", _MAX_FEATURES)
        out.append([reader.integer(f"{what}[{level}]") for _ in range(n)])
    return out


def _read_nested_points(reader: _Reader, what: str, levels: int) -> list[list[tuple[float, float]]]:
    start = reader.pos
    if reader.integer(f"{what} level count") != levels:
        raise reader.fail(f"{what} does not have {levels} levels", start)
    out = []
    for level in range(levels):
        n = reader.count(f"{what} length of level {level}", _MAX_FEATURES)
        # dlib::vector<float,2> serializes as x then y.
        out.append([(reader.real(what), reader.real(what)) for _ in range(n)])
    return out


def load_dat(path: str | Path) -> ShapePredictorModel:
    """Parse a dlib `shape_predictor_*.dat` file."""
    path = Path(path)
    model = parse_shape_predictor(path.read_bytes())
    logger.info(
        "read %s: %d landmarks, %d levels x %d trees of depth %d, %d feature pixels per level",
        path.name,
        model.num_parts,
        model.split_idx1.shape[0],
        model.split_idx1.shape[1],
        model.tree_depth,
        model.anchor_idx.shape[1],
    )
    return model


def save_npz(model: ShapePredictorModel, path: str | Path) -> None:
    """Write the model as the plain `.npz` a model pack carries."""
    model.validate()
    arrays = {f.name: getattr(model, f.name) for f in fields(model)}
    np.savez(Path(path), format_version=np.int32(FORMAT_VERSION), **arrays)


_FLOAT_ARRAYS = ("initial_shape", "split_thresh", "leaf_values", "deltas")
_INT_ARRAYS = ("split_idx1", "split_idx2", "anchor_idx")


def load_npz(path: str | Path) -> ShapePredictorModel:
    """Read a model written by `save_npz`."""
    with np.load(Path(path), allow_pickle=False) as npz:
        missing = sorted(set(_FLOAT_ARRAYS + _INT_ARRAYS) - set(npz.files))
        if missing:
            raise ShapePredictorFormatError(f"{path}: missing arrays {missing}")
        version = int(npz["format_version"]) if "format_version" in npz.files else None
        if version != FORMAT_VERSION:
            raise ShapePredictorFormatError(f"{path}: format_version {version} is not supported")
        f32 = {name: np.ascontiguousarray(npz[name], np.float32) for name in _FLOAT_ARRAYS}
        i32 = {name: np.ascontiguousarray(npz[name], np.int32) for name in _INT_ARRAYS}
    model = ShapePredictorModel(
        initial_shape=f32["initial_shape"],
        split_idx1=i32["split_idx1"],
        split_idx2=i32["split_idx2"],
        split_thresh=f32["split_thresh"],
        leaf_values=f32["leaf_values"],
        anchor_idx=i32["anchor_idx"],
        deltas=f32["deltas"],
    )
    model.validate()
    return model
