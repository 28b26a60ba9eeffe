"""BlazeFace face detector (mediapipe short/full range, converted to ONNX) on ONNX Runtime.

The ONNX contract (see models.convert.mediapipe_models): input `image` float32 [1, 3, S, S],
RGB scaled to [-1, 1] (pixel / 127.5 - 1, as mediapipe's ImageToTensorCalculator feeds it);
outputs `regressors` [1, N, 16] and `classificators` [1, N, 1] (raw logits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from models.errors import ModelError
from models.runtime.base import KeypointScheme
from models.types import Detection, FloatArray

logger = logging.getLogger(__name__)

Variant = Literal["short", "full"]


@dataclass(frozen=True)
class SsdAnchorOptions:
    """The fields of mediapipe's SsdAnchorsCalculatorOptions that the face models set."""

    input_height: int
    input_width: int
    min_scale: float
    max_scale: float
    strides: tuple[int, ...]
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = True


# From mediapipe/modules/face_detection/face_detection_short_range.pbtxt (mediapipe 0.10.x),
# node SsdAnchorsCalculator: 128x128 input, 4 layers with strides 8,16,16,16 -> 16x16x2 + 8x8x6
# = 896 anchors, matching the 896 rows the tflite model outputs.
SHORT_RANGE_ANCHORS = SsdAnchorOptions(
    input_height=128,
    input_width=128,
    min_scale=0.1484375,
    max_scale=0.75,
    strides=(8, 16, 16, 16),
    interpolated_scale_aspect_ratio=1.0,
)
# From mediapipe/modules/face_detection/face_detection_full_range.pbtxt: 192x192 input, one
# layer of stride 4 and no interpolated anchor -> 48x48x1 = 2304 anchors.
FULL_RANGE_ANCHORS = SsdAnchorOptions(
    input_height=192,
    input_width=192,
    min_scale=0.1484375,
    max_scale=0.75,
    strides=(4,),
    interpolated_scale_aspect_ratio=0.0,
)
ANCHOR_OPTIONS: dict[Variant, SsdAnchorOptions] = {
    "short": SHORT_RANGE_ANCHORS,
    "full": FULL_RANGE_ANCHORS,
}

# mediapipe's TensorsToDetectionsCalculator options for both face models: 16 values per anchor
# = box (x, y, w, h; reverse_output_order) + 6 keypoints (x, y), all in input pixels, so the
# scale is the input size; logits are clipped to +-100 before the sigmoid.
NUM_COORDS = 16
NUM_KEYPOINTS = 6
KEYPOINT_OFFSET = 4
SCORE_CLIPPING = 100.0

# mediapipe's own defaults, for callers that want them: min_score_thresh 0.5 (short) and 0.6
# (full); NonMaxSuppressionCalculator min_suppression_threshold 0.3, WEIGHTED, IoU.
MEDIAPIPE_SCORE_THRESHOLD: dict[Variant, float] = {"short": 0.5, "full": 0.6}
MEDIAPIPE_NMS_IOU = 0.3

# Keypoint order of the face models (mediapipe FaceKeyPoint). "right"/"left" are the SUBJECT's:
# on an unmirrored frontal photo right_eye lies at the smaller image x (checked on astronaut).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")

# The value a padded pixel gets; black after normalisation, as mediapipe's zero border.
_PAD_VALUE = -1.0
_PIXEL_SCALE = 1.0 / 127.5

_ORT_ERRORS: tuple[type[BaseException], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
    RuntimeError,
    OSError,
)


def _layer_scale(options: SsdAnchorOptions, layer: int) -> float:
    count = len(options.strides)
    if count == 1:
        return (options.min_scale + options.max_scale) * 0.5
    return options.min_scale + (options.max_scale - options.min_scale) * layer / (count - 1)


def generate_anchors(options: SsdAnchorOptions) -> FloatArray:
    """Return SSD anchors as an (N, 4) array of normalised (x_center, y_center, w, h)."""
    rows: list[FloatArray] = []
    layer = 0
    count = len(options.strides)
    while layer < count:
        # Consecutive layers with the same stride share one feature map: their anchors are
        # interleaved per cell, which is the order the model's output rows follow.
        sizes: list[tuple[float, float]] = []
        last = layer
        while last < count and options.strides[last] == options.strides[layer]:
            scale = _layer_scale(options, last)
            if last == 0 and options.reduce_boxes_in_lowest_layer:
                shapes = [(1.0, 0.1), (2.0, scale), (0.5, scale)]
            else:
                shapes = [(ratio, scale) for ratio in options.aspect_ratios]
                if options.interpolated_scale_aspect_ratio > 0.0:
                    following = 1.0 if last == count - 1 else _layer_scale(options, last + 1)
                    shapes.append(
                        (options.interpolated_scale_aspect_ratio, math.sqrt(scale * following))
                    )
            for ratio, size in shapes:
                sizes.append((size * math.sqrt(ratio), size / math.sqrt(ratio)))
            last += 1
        stride = options.strides[layer]
        rows_n = math.ceil(options.input_height / stride)
        cols_n = math.ceil(options.input_width / stride)
        ys, xs = np.meshgrid(np.arange(rows_n), np.arange(cols_n), indexing="ij")
        centers = np.stack(
            [(xs + options.anchor_offset_x) / cols_n, (ys + options.anchor_offset_y) / rows_n],
            axis=-1,
        ).reshape(-1, 1, 2)
        dims = np.ones((len(sizes), 2)) if options.fixed_anchor_size else np.array(sizes)
        per_cell = np.concatenate(
            [
                np.broadcast_to(centers, (len(centers), len(sizes), 2)),
                np.broadcast_to(dims, (len(centers), len(sizes), 2)),
            ],
            axis=-1,
        )
        rows.append(per_cell.reshape(-1, 4).astype(np.float32))
        layer = last
    return np.concatenate(rows, axis=0)


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square model input: image = (input - offset) / scale."""

    scale: float
    offset_x: float
    offset_y: float


def letterbox(image_bgr: npt.NDArray[np.uint8], size: int) -> tuple[FloatArray, Letterbox]:
    """Fit a BGR image into a size x size [-1, 1] RGB NCHW tensor, keeping aspect and centring."""
    height, width = image_bgr.shape[:2]
    scale = min(size / width, size / height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    # INTER_AREA averages when shrinking a multi-megapixel photo; bilinear would alias.
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    off_x, off_y = (size - new_w) // 2, (size - new_h) // 2
    tensor = np.full((3, size, size), _PAD_VALUE, dtype=np.float32)
    rgb = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    tensor[:, off_y : off_y + new_h, off_x : off_x + new_w] = rgb * _PIXEL_SCALE - 1.0
    return tensor[None], Letterbox(scale=scale, offset_x=off_x, offset_y=off_y)


def box_iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    """IoU of one x0,y0,x1,y1 box with each row of an (N, 4) array."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0.0, None) * np.clip(y1 - y0, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0.0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def weighted_nms(
    boxes: FloatArray, scores: FloatArray, keypoints: FloatArray, iou_threshold: float
) -> list[tuple[FloatArray, float, FloatArray]]:
    """Blend each cluster of overlapping boxes by score (mediapipe's WEIGHTED NMS)."""
    # Averaging the neighbours of the best box steadies boxes and keypoints from frame to
    # frame, which the aligner downstream needs more than a single anchor's raw regression.
    remaining = np.argsort(-scores, kind="stable")
    kept: list[tuple[FloatArray, float, FloatArray]] = []
    while remaining.size:
        top = remaining[0]
        overlap = box_iou(boxes[top], boxes[remaining])
        overlap[0] = 1.0  # a degenerate top box still belongs to its own cluster
        cluster = remaining[overlap > iou_threshold]
        weights = scores[cluster] / scores[cluster].sum()
        box = (boxes[cluster] * weights[:, None]).sum(axis=0)
        points = (keypoints[cluster] * weights[:, None, None]).sum(axis=0)
        kept.append((box.astype(np.float32), float(scores[top]), points.astype(np.float32)))
        remaining = remaining[overlap <= iou_threshold]
    return kept


class BlazeFaceDetector:
    """Mediapipe BlazeFace (short or full range) behind detect(image) -> detections."""

    keypoint_names = KEYPOINT_NAMES
    keypoint_scheme: KeypointScheme = "blazeface6"

    def __init__(
        self,
        path: Path,
        variant: Variant,
        score_threshold: float,
        nms_iou: float,
        threads: int = 2,
    ) -> None:
        if variant not in ANCHOR_OPTIONS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}; use 'short' or 'full'")
        if not 0.0 < score_threshold < 1.0 or not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"score_threshold {score_threshold} / nms_iou {nms_iou} out of (0, 1)")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.path = path
        self.variant: Variant = variant
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self._options = ANCHOR_OPTIONS[variant]
        self._anchors = generate_anchors(self._options)
        self.input_size = self._options.input_width
        self._session = self._open(path, threads)
        self._check_signature()
        self._run(np.zeros((1, 3, self.input_size, self.input_size), np.float32))

    def _open(self, path: Path, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning pool threads would steal the 2 shared edge cores from the resize and decode
        # around each run (measured: full range 6.3 ms per frame spinning vs ~2.3 ms without).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as err:
            raise ModelError(f"cannot load BlazeFace model {path}: {err}") from err

    def _check_signature(self) -> None:
        # The manifest chose the variant; a file that disagrees is a packaging error, not
        # something to guess around.
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        size, anchors = self.input_size, len(self._anchors)
        expected_in = {"image": [1, 3, size, size]}
        expected_out = {
            "regressors": [1, anchors, NUM_COORDS],
            "classificators": [1, anchors, 1],
        }
        if inputs != expected_in or outputs != expected_out:
            raise ModelError(
                f"{self.path} is not a BlazeFace {self.variant}-range model: inputs {inputs}, "
                f"outputs {outputs}; expected {expected_in}, {expected_out}"
            )

    def _run(self, tensor: FloatArray) -> tuple[FloatArray, FloatArray]:
        try:
            regressors, logits = self._session.run(
                ["regressors", "classificators"], {"image": tensor}
            )
        except _ORT_ERRORS as err:
            raise ModelError(f"BlazeFace inference failed ({self.path}): {err}") from err
        return regressors[0], logits[0, :, 0]

    def _decode(self, regressors: FloatArray, logits: FloatArray) -> list[Detection]:
        """Turn raw outputs into detections in normalised model-input coordinates."""
        # float64: exp(100) overflows float32.
        clipped = np.clip(logits.astype(np.float64), -SCORE_CLIPPING, SCORE_CLIPPING)
        scores = 1.0 / (1.0 + np.exp(-clipped))
        keep = np.flatnonzero(scores >= self.score_threshold)
        if keep.size == 0:
            return []
        raw, anchors = regressors[keep], self._anchors[keep]
        size = float(self.input_size)
        centre = raw[:, 0:2] / size * anchors[:, 2:4] + anchors[:, 0:2]
        extent = raw[:, 2:4] / size * anchors[:, 2:4]
        boxes = np.concatenate([centre - extent / 2.0, centre + extent / 2.0], axis=1)
        points = raw[:, KEYPOINT_OFFSET : KEYPOINT_OFFSET + 2 * NUM_KEYPOINTS].reshape(
            -1, NUM_KEYPOINTS, 2
        )
        points = points / size * anchors[:, None, 2:4] + anchors[:, None, 0:2]
        merged = weighted_nms(boxes, scores[keep].astype(np.float32), points, self.nms_iou)
        return [
            Detection(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=score,
                keypoints=kp,
                keypoint_names=KEYPOINT_NAMES,
            )
            for b, score, kp in merged
        ]

    def detect(self, image_bgr: npt.NDArray[np.uint8]) -> list[Detection]:
        """Return the faces in a BGR (or grayscale) uint8 image, in its pixel coordinates."""
        image = as_bgr(image_bgr)
        tensor, fit = letterbox(image, self.input_size)
        found = self._decode(*self._run(tensor))
        return [_to_pixels(d, fit, self.input_size) for d in found]


def as_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Validate an image and expand grayscale to 3 channels."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 numpy image, got {getattr(image, 'dtype', type(image))}"
        )
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 BGR or HxW gray image, got shape {image.shape}")
    return image


def _to_pixels(detection: Detection, fit: Letterbox, size: int) -> Detection:
    offset = np.array([fit.offset_x, fit.offset_y], dtype=np.float32)
    box = np.array(detection.box, dtype=np.float32).reshape(2, 2)
    box = (box * size - offset) / fit.scale
    points = ((detection.keypoints * size - offset) / fit.scale).astype(np.float32)
    return Detection(
        box=(float(box[0, 0]), float(box[0, 1]), float(box[1, 0]), float(box[1, 1])),
        score=detection.score,
        keypoints=points,
        keypoint_names=detection.keypoint_names,
    )


def transform(detection: Detection, scale: float, dx: float, dy: float) -> Detection:
    """Map a detection with p -> p * scale + (dx, dy)."""
    x0, y0, x1, y1 = detection.box
    offset = np.array([dx, dy], np.float32)
    return Detection(
        box=(x0 * scale + dx, y0 * scale + dy, x1 * scale + dx, y1 * scale + dy),
        score=detection.score,
        keypoints=(detection.keypoints * np.float32(scale) + offset).astype(np.float32),
        keypoint_names=detection.keypoint_names,
    )


def shrink(image: npt.NDArray[np.uint8], longest: int) -> tuple[npt.NDArray[np.uint8], float]:
    """Downscale so the long side is at most `longest`; return the image and the factor used."""
    factor = min(1.0, longest / max(image.shape[:2]))
    if factor == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    small = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return small, factor


def merge_detections(detections: Sequence[Detection], iou_threshold: float) -> list[Detection]:
    """Weighted-NMS detections that came from different crops of one image."""
    if not detections:
        return []
    boxes = np.array([d.box for d in detections], dtype=np.float32)
    scores = np.array([d.score for d in detections], dtype=np.float32)
    points = np.stack([d.keypoints for d in detections]).astype(np.float32)
    names = detections[0].keypoint_names
    return [
        Detection(
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            score=s,
            keypoints=kp,
            keypoint_names=names,
        )
        for b, s, kp in weighted_nms(boxes, scores, points, iou_threshold)
    ]


# Fallbacks of detect_multiscale, used only when the whole frame gives no face.
# Tight crops (LFW 125 px, CASIA 168x193, a cab face filling the frame) cut the face at the
# frame edge and BlazeFace scores it below threshold; a black border (the letterbox's own pad
# colour) restores the context it was trained on. Borders are tried in this order until one
# yields a face: on the shared sets the short-range model recovers all 4 LFW misses with 10%,
# one CASIA miss needs 25%; the full-range model, trained on small faces, often needs 50%.
PAD_FRACTIONS: tuple[float, ...] = (0.1, 0.25, 0.5)
# Photos (up to 7 MP) with a small face: overlapping square tiles of this fraction of the
# shorter side give the face more model pixels. Half-tile steps mean any face up to half a
# tile lies whole inside one tile.
TILE_FRACTION = 0.5
TILE_OVERLAP = 0.5
# Tiling only adds resolution when a tile is still larger than the model input.
MIN_TILE_SCALE = 1.0
# Fallback crops are shrunk first to this multiple of the model input: the letterbox shrinks
# them anyway, and resizing a 7 MP photo (padded three ways, or cut into ~15 tiles) at full
# size cost ~250 ms; one INTER_AREA pass keeps the anti-aliasing.
WORK_SCALE = 2
# ~15 tiles are ~15 more chances of a false hit, so tile detections must score higher than the
# whole-frame threshold: on cjk_singletons the faces that only tiles found scored 0.82-0.98,
# while spurious tile hits (background, half faces on tight crops) scored 0.50-0.67.
TILE_MIN_SCORE = 0.75


def _tile_origins(height: int, width: int, side: int, step: int) -> list[tuple[int, int]]:
    def starts(length: int) -> list[int]:
        points = list(range(0, max(length - side, 0) + 1, step))
        if points[-1] + side < length:
            points.append(length - side)  # last tile flush with the far edge
        return points

    return [(y, x) for y in starts(height) for x in starts(width)]


def detect_padded(
    detector: BlazeFaceDetector,
    image_bgr: npt.NDArray[np.uint8],
    pad_fractions: Sequence[float] = PAD_FRACTIONS,
) -> list[Detection]:
    """Detect after adding a black border; the first border size that finds a face wins."""
    small, factor = shrink(as_bgr(image_bgr), WORK_SCALE * detector.input_size)
    height, width = small.shape[:2]
    for fraction in pad_fractions:
        pad = max(1, round(fraction * max(height, width)))
        padded = np.pad(small, ((pad, pad), (pad, pad), (0, 0)))
        found = detector.detect(padded)
        if found:
            return [transform(d, 1.0 / factor, -pad / factor, -pad / factor) for d in found]
    return []


def detect_tiled(
    detector: BlazeFaceDetector,
    image_bgr: npt.NDArray[np.uint8],
    tile_fraction: float = TILE_FRACTION,
    tile_overlap: float = TILE_OVERLAP,
    tile_min_score: float = TILE_MIN_SCORE,
) -> list[Detection]:
    """Detect on overlapping square tiles and merge; [] when tiles would not add resolution."""
    image = as_bgr(image_bgr)
    full_side = min(image.shape[:2]) * tile_fraction
    if full_side < detector.input_size * MIN_TILE_SCALE:
        return []
    # Shrink so that one tile is WORK_SCALE model inputs wide, then cut the tiles.
    longest = max(image.shape[:2]) * WORK_SCALE * detector.input_size / full_side
    small, factor = shrink(image, round(longest))
    height, width = small.shape[:2]
    side = round(min(height, width) * tile_fraction)
    step = max(1, round(side * (1.0 - tile_overlap)))
    pieces: list[Detection] = []
    for y, x in _tile_origins(height, width, side, step):
        tile = small[y : y + side, x : x + side]
        pieces.extend(
            transform(d, 1.0 / factor, x / factor, y / factor)
            for d in detector.detect(tile)
            if d.score >= tile_min_score
        )
    return merge_detections(pieces, detector.nms_iou)


def _best_score(detections: Sequence[Detection]) -> float:
    return max((d.score for d in detections), default=0.0)


def detect_multiscale(
    detector: BlazeFaceDetector,
    image_bgr: npt.NDArray[np.uint8],
    pad_fractions: Sequence[float] = PAD_FRACTIONS,
    tile_fraction: float = TILE_FRACTION,
    tile_overlap: float = TILE_OVERLAP,
    tile_min_score: float = TILE_MIN_SCORE,
) -> list[Detection]:
    """Detect on the whole frame; if nothing is found, try borders and tiles, keep the surer."""
    image = as_bgr(image_bgr)
    found = detector.detect(image)
    if found:
        return found
    # Both fallbacks run because neither knows whether the face was too big or too small:
    # on full-body photos a border makes the small face smaller still and BlazeFace fires on
    # a torso (scores 0.53-0.74 on cjk_singletons), while tiles find the real face at 0.9+;
    # on a tight crop tiles see only face parts. The more confident answer is kept.
    padded = detect_padded(detector, image, pad_fractions)
    tiled = detect_tiled(detector, image, tile_fraction, tile_overlap, tile_min_score)
    chosen = tiled if _best_score(tiled) > _best_score(padded) else padded
    logger.debug(
        "multiscale fallback: border best %.2f, tiles best %.2f",
        _best_score(padded),
        _best_score(tiled),
    )
    return chosen


class MultiscaleBlazeFace:
    """BlazeFace with the border-and-tile fallback when the whole frame shows no face."""

    keypoint_scheme: KeypointScheme = "blazeface6"

    def __init__(self, detector: BlazeFaceDetector) -> None:
        self.detector = detector

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Faces found, best first."""
        return detect_multiscale(self.detector, image)


def build(
    path: Path, params: Mapping[str, Any], threads: int
) -> BlazeFaceDetector | MultiscaleBlazeFace:
    """Factory used by the wrapper registry.

    params: variant (short|full), score_threshold, nms_iou, fallback (multiscale|none) and
    threads (this tiny model runs as fast on one thread, so packs cap it at 1).
    """
    variant = str(params.get("variant", "short"))
    if variant not in ANCHOR_OPTIONS:
        raise ModelError(f"{path.name}: params.variant must be 'short' or 'full', got {variant!r}")
    fallback = str(params.get("fallback", "none"))
    if fallback not in ("multiscale", "none"):
        raise ModelError(f"{path.name}: params.fallback must be 'multiscale' or 'none'")
    try:
        detector = BlazeFaceDetector(
            path,
            variant="short" if variant == "short" else "full",
            score_threshold=float(
                params.get("score_threshold", MEDIAPIPE_SCORE_THRESHOLD[variant])
            ),
            nms_iou=float(params.get("nms_iou", MEDIAPIPE_NMS_IOU)),
            threads=min(threads, int(params.get("threads", threads))),
        )
    except ValueError as err:
        raise ModelError(f"{path.name}: {err}") from err
    return MultiscaleBlazeFace(detector) if fallback == "multiscale" else detector
