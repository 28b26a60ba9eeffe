"""The ONNX contract a passive PAD model must meet, and its runtime wrapper (task `liveness`).

Contract: one float32 input NCHW, N x 3 x S x S, RGB scaled to [0, 1] then `(x - mean) / std`
per channel; the crop is the square of side `crop_scale` x the face box's longer side,
centred on the box, resized to S. One output, either N (or N x 1) live probabilities
(`output: probability`) or N x C class logits with the live class at `live_index`
(`output: softmax`). Manifest params: input_size, crop_scale, mean, std, output, live_index.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import ModelError
from models.liveness.types import PassiveThresholds
from models.manifest import PackManifest
from models.runtime.base import onnx_session
from models.runtime.image import to_bgr
from models.types import FloatArray, Image, Task

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


class PadParams(BaseModel):
    """Manifest params of a `pad_onnx` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: int = Field(default=80, ge=16, le=512, description="square input side, px")
    crop_scale: float = Field(default=2.7, ge=1.0, le=6.0, description="crop side / face box side")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: Literal["probability", "softmax"] = "probability"
    live_index: int = Field(default=1, ge=0, le=15, description="live class column for softmax")
    threads: int = Field(default=1, ge=1, le=16)
    crop_scales: tuple[float, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=4,
        description="several crops of the same face, stacked on the channel axis in this order "
        "(input N x 3k x S x S); unset: the one crop of `crop_scale`",
    )
    crop_fit: bool = Field(
        default=False,
        description="crop the box's own width and height times the scale, shrinking the scale "
        "so the crop stays inside the image and shifting it inward (no padding), then resize "
        "to S x S; false: a square of the longer side, padded with black",
    )
    live_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="live probability at or above which a presentation counts as live, as the "
        "pack carries it before any site calibration (jifang eval liveness and the gate use "
        "it unless a PAD calibration or the config sets another)",
    )
    spoof_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="live probability below which the gate refuses without a challenge; "
        "unset: equal to live_threshold (no doubt band)",
    )

    @property
    def scales(self) -> tuple[float, ...]:
        """The crop scales in input order."""
        return self.crop_scales or (self.crop_scale,)


class OnnxPad:
    """A passive PAD model on onnxruntime: face crops -> live probability per face."""

    def __init__(self, path: Path, params: PadParams, threads: int) -> None:
        self.params = params
        self._session = onnx_session(path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(self._session.get_outputs()) != 1:
            raise ModelError(f"{path.name}: a PAD model has one input and one output")
        shape = inputs[0].shape
        size = params.input_size
        expected = (3 * len(params.scales), size, size)
        if len(shape) != 4 or any(
            isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=True)
        ):
            raise ModelError(
                f"{path.name}: input shape {shape} does not match N x {expected[0]} x {size} x {size}"
            )
        self._input = inputs[0].name
        self.score_crops(np.zeros((1, size, size, expected[0]), np.uint8))

    def crop(self, image: Image, box: Box) -> Image:
        """The RGB crop(s) the model takes, S x S x 3k (one per crop scale)."""
        bgr = to_bgr(image)
        crops = [self._one_crop(bgr, box, scale) for scale in self.params.scales]
        rgb = [cv2.cvtColor(c, cv2.COLOR_BGR2RGB) for c in crops]
        return np.asarray(np.concatenate(rgb, axis=2), np.uint8)

    def _one_crop(self, bgr: Image, box: Box, crop_scale: float) -> Image:
        x0, y0, x1, y1 = box
        size = self.params.input_size
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        if self.params.crop_fit:
            height, width = bgr.shape[:2]
            w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            # The models were trained on crops that never leave the frame: the scale shrinks
            # for a face near the border or filling the image, and the window moves inward.
            s = min((height - 1) / h, (width - 1) / w, crop_scale)
            cw, ch = w * s, h * s
            left = min(max(cx - cw / 2, 0.0), width - 1 - cw)
            top = min(max(cy - ch / 2, 0.0), height - 1 - ch)
            sx, sy = size / cw, size / ch
            matrix = np.array([[sx, 0, -sx * left], [0, sy, -sy * top]], np.float64)
        else:
            scale = size / (crop_scale * max(x1 - x0, y1 - y0))
            matrix = np.array(
                [[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], np.float64
            )
        return np.asarray(
            cv2.warpAffine(
                bgr, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            ),
            np.uint8,
        )

    def score_crops(self, crops: np.ndarray) -> FloatArray:
        """N x S x S x 3k uint8 RGB crops -> N live probabilities in [0, 1]."""
        scaled = crops.astype(np.float32) / 255.0
        k = len(self.params.scales)
        mean = np.tile(np.asarray(self.params.mean, np.float32), k)
        std = np.tile(np.asarray(self.params.std, np.float32), k)
        normed = (scaled - mean) / std
        blob = np.ascontiguousarray(normed.transpose(0, 3, 1, 2), dtype=np.float32)
        try:
            (raw,) = self._session.run(None, {self._input: blob})
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"PAD model failed: {err}") from err
        out = np.asarray(raw, np.float64)
        n = crops.shape[0]
        if self.params.output == "probability":
            scores = out.reshape(n, -1)[:, 0]
        else:
            logits = out.reshape(n, -1)
            if logits.shape[1] <= self.params.live_index:
                raise ModelError(f"PAD output has {logits.shape[1]} classes, live_index too large")
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            scores = (exp / exp.sum(axis=1, keepdims=True))[:, self.params.live_index]
        if not np.all(np.isfinite(scores)):
            raise ModelError("PAD model returned non-finite scores")
        return np.clip(scores, 0.0, 1.0).astype(np.float32)

    def score(self, image: Image, boxes: Sequence[Box]) -> FloatArray:
        """Live probability of each face box in one image."""
        if not boxes:
            return np.zeros((0,), np.float32)
        return self.score_crops(np.stack([self.crop(image, b) for b in boxes]))


def build(path: Path, params: Mapping[str, Any], threads: int) -> OnnxPad:
    """Factory used by the wrapper registry (wrapper id `pad_onnx`)."""
    try:
        parsed = PadParams.model_validate(dict(params))
    except ValidationError as err:
        raise ModelError(f"{path.name}: bad pad_onnx params ({err})") from err
    return OnnxPad(path, parsed, threads=min(threads, parsed.threads))


def carried_thresholds(
    pack_dir: Path, manifest: PackManifest, pad: OnnxPad, calibration: str = "pad"
) -> PassiveThresholds:
    """The bands the pack carries for its PAD: the named PAD calibration when the pack's
    calibration block has one for this very PAD file, else the component's own params."""
    from models.manifest import load_calibration, sha256_file

    entry = manifest.file(Task.LIVENESS)
    assert entry is not None  # a loaded PAD has its entry
    record = load_calibration(pack_dir).pad.get(calibration)
    if record is not None:
        if record.pad_sha256 == entry.sha256 or record.pad_sha256 == sha256_file(
            pack_dir / entry.path
        ):
            return PassiveThresholds(
                record.live_threshold, record.spoof_threshold, f"calibration {calibration}"
            )
        logger.warning(
            "%s: PAD calibration %r was made for another PAD file; using the component's "
            "own thresholds",
            manifest.name,
            calibration,
        )
    live = pad.params.live_threshold
    if live is None:
        raise ModelError(
            f"{manifest.name}: the PAD component {entry.path} carries no live_threshold and the "
            f"pack has no PAD calibration {calibration!r}: run `jifang calibrate liveness` or "
            "set liveness.passive.live_threshold"
        )
    spoof = pad.params.spoof_threshold
    return PassiveThresholds(live, live if spoof is None else min(spoof, live), "pack")


def load_pad(pack_dir: Path, manifest: PackManifest, threads: int) -> OnnxPad | None:
    """The pack's PAD model, or None when the pack declares none (optional and absent counts)."""
    from models.runtime.registry import build_component

    entry = manifest.file(Task.LIVENESS)
    if entry is None:
        return None
    if not (pack_dir / entry.path).is_file():
        if entry.optional:
            logger.info("%s: optional PAD model %s absent", manifest.name, entry.path)
            return None
        raise ModelError(f"{manifest.name}: PAD model {entry.path} is missing")
    return build_component(pack_dir, entry, threads, OnnxPad)
