"""Per-zone state from camera frames: cylinder present, person at the zone, codes visible.

Presence comes from the station pack's cylinder detector when one is installed
(`vision.station_pack`): a zone holds a cylinder when the detected boxes cover
`detector_zone_cover` of its polygon. Without a detector, presence (and always the occupancy
person check) uses a background difference inside the calibrated polygons (computed on
a downscaled grey frame); codes are read (zxing-cpp, or OpenCV's QR detector) on the
full-resolution zone crop, with Wiener deblurring tries when the crop does not decode as it
is (QrReader), only where a cylinder is present and only every n-th frame, to keep two
cameras with 8 zones each inside a 2-core budget.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import cv2
import numpy as np

from edge_agent.station.config import VisionConfig, ZoneConfig
from edge_agent.station.domain import ZoneObservation

logger = logging.getLogger(__name__)


class PersonDetector(Protocol):
    """Finds people in an image (edge_agent.station.person.PoseDetector)."""

    def detect(self, image_bgr: np.ndarray) -> Sequence[PersonBox]:
        """People in a BGR image."""
        ...


class PersonBox(Protocol):
    """One detected person: box x0, y0, x1, y1 in the image's pixels."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The box."""
        ...


class CylinderDetector(Protocol):
    """Finds cylinders in a frame (models.runtime.cylinder_detector.CylinderDetector)."""

    def detect(self, image_bgr: np.ndarray, min_score: float | None = None) -> Sequence[PersonBox]:
        """Cylinder boxes (x0, y0, x1, y1 in frame pixels), best first."""
        ...


def load_cylinder_detector(vision: VisionConfig) -> CylinderDetector | None:
    """The station pack's cylinder detector, or None (background method) when there is none.

    A configured pack that cannot be read or fails its checksums raises ModelError: presence
    feeds the safety rules, so a broken pack stops the station instead of degrading silently.
    """
    if vision.station_pack is None:
        return None
    from models.station_pack import load_cylinder_detector as load_from_pack

    detector = load_from_pack(vision.station_pack, vision.detector_threads)
    if detector is None:
        logger.warning(
            "station pack %s has no cylinder detector: presence by background difference",
            vision.station_pack,
        )
    return cast(CylinderDetector | None, detector)


class QrReader:
    """Reads QR codes: zxing-cpp when installed (faster, reads 2 px modules), else OpenCV.

    A crop is first decoded as it is. When that fails, it is upscaled and a Wiener filter
    undoes a Gaussian blur, for the sigmas of `qr_deblur_sigmas` in turn: a few per read,
    resuming where the last read of the same zone stopped, so a cylinder that stands on the
    scale for several frames gets every sigma tried (best of N frames) at a bounded cost per
    frame. Focus is a property of the camera, so the sigma that last decoded is tried first.
    One reader serves one camera. bench/station.py measures the rates.
    """

    def __init__(self, vision: VisionConfig) -> None:
        self._vision = vision
        backend = vision.qr_backend
        self._zxing: Any = None
        if backend in ("auto", "zxing"):
            try:
                import zxingcpp
            except ImportError:
                if backend == "zxing":
                    raise
                logger.info("zxing-cpp not installed; QR codes read with OpenCV")
            else:
                self._zxing = zxingcpp
        self._cv = cv2.QRCodeDetectorAruco() if self._zxing is None else None
        self._next: dict[str, int] = {}  # zone -> index of the next sigma to try
        self._last_good: int | None = None  # index of the sigma that last decoded

    def _decode(self, grey: np.ndarray) -> tuple[str, ...]:
        if self._zxing is not None:
            found = self._zxing.read_barcodes(grey, formats=self._zxing.BarcodeFormat.QRCode)
            return tuple(dict.fromkeys(b.text for b in found if b.valid and b.text))
        if self._cv is None:
            return ()
        try:
            ok, texts, _, _ = self._cv.detectAndDecodeMulti(grey)
        except cv2.error as err:
            logger.debug("QR detector error: %s", err)
            return ()
        return tuple(dict.fromkeys(t for t in texts if t)) if ok else ()

    def _schedule(self, key: str) -> list[int]:
        """The sigma indices to try on this read of `key`: the last good one, then the next."""
        sigmas = self._vision.qr_deblur_sigmas
        order: list[int] = []
        if self._last_good is not None:
            order.append(self._last_good)
        cursor = self._next.get(key, 0)
        while len(order) < min(self._vision.qr_deblur_per_read, len(sigmas)):
            if cursor not in order:
                order.append(cursor)
            cursor = (cursor + 1) % len(sigmas)
        self._next[key] = cursor
        return order

    def read(self, image: np.ndarray, key: str = "") -> tuple[str, ...]:
        """Return the decoded texts found in `image` (BGR or grey); empty if none.

        `key` names the zone the crop comes from, so successive reads of it continue the
        sigma ladder instead of restarting it.
        """
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        codes = self._decode(grey)
        sigmas = self._vision.qr_deblur_sigmas
        if codes or self._vision.qr_upscale <= 1.0 or not sigmas:
            return codes
        f = self._vision.qr_upscale
        big = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        spectrum = np.fft.rfft2(big.astype(np.float32) - float(big.mean()))
        for index in self._schedule(key):
            restored = _wiener(
                spectrum,
                big.shape,
                float(big.mean()),
                sigmas[index] * f,
                self._vision.qr_deblur_noise,
            )
            codes = self._decode(restored)
            if codes:
                self._last_good = index
                self._next.pop(key, None)
                return codes
        return ()


def _wiener(
    spectrum: np.ndarray, shape: tuple[int, ...], mean: float, sigma: float, noise: float
) -> np.ndarray:
    """Undo a Gaussian blur of `sigma` px: Wiener filter H / (H^2 + noise), H the Gaussian's
    transfer function, applied to the rfft2 `spectrum` of a mean-removed image of `shape`."""
    h, w = shape[0], shape[1]
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    transfer = np.exp(np.float32(-2.0 * np.pi**2 * sigma**2) * (fx * fx + fy * fy))
    out = np.fft.irfft2(spectrum * (transfer / (transfer * transfer + noise)), s=(h, w)) + mean
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _ZoneGeometry:
    zone: ZoneConfig
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the small frame
    mask: np.ndarray  # uint8 0/255 over box
    area: int
    op_box: tuple[int, int, int, int]
    op_mask: np.ndarray
    op_area: int
    full_box: tuple[int, int, int, int]  # zone bounding box in the full frame
    op_full_box: tuple[int, int, int, int]
    op_polygon: np.ndarray  # float32 (N, 2) in the full frame


def _geometry(
    polygon: list[tuple[int, int]], scale: float, shape: tuple[int, int]
) -> tuple[tuple[int, int, int, int], np.ndarray, int]:
    h, w = shape
    pts = np.array([[x * scale, y * scale] for x, y in polygon], dtype=np.float32)
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, w - 1))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, h - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, x0 + 1, w))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, y0 + 1, h))
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round(pts - [x0, y0]).astype(np.int32)], 255)
    return (x0, y0, x1, y1), mask, max(int(cv2.countNonZero(mask)), 1)


class ZoneAnalyzer:
    """Analyses one camera's frames for its zones."""

    def __init__(
        self,
        camera_id: str,
        zones: list[ZoneConfig],
        vision: VisionConfig,
        frame_size: tuple[int, int],
        person_detector: PersonDetector | None = None,
        cylinder_detector: CylinderDetector | None = None,
    ) -> None:
        if vision.person_method == "pose" and person_detector is None:
            raise ValueError(f"camera {camera_id}: person_method pose needs a person detector")
        self._person_detector = person_detector if vision.person_method == "pose" else None
        self._people: dict[str, bool] = {}
        self._person_boxes: dict[str, tuple[tuple[float, float, float, float], ...]] = {}
        self.camera_id = camera_id
        self._vision = vision
        self._zones = [z for z in zones if z.camera_id == camera_id]
        width, height = frame_size
        self._full = (height, width)
        s = vision.process_scale
        self._small = (max(int(round(width * s)), 1), max(int(round(height * s)), 1))
        shape = (self._small[1], self._small[0])
        geoms = []
        for zone in self._zones:
            box, mask, area = _geometry(zone.polygon, s, shape)
            op_box, op_mask, op_area = _geometry(zone.operator_polygon, s, shape)
            full_box, _, _ = _geometry(zone.polygon, 1.0, self._full)
            op_full_box, _, _ = _geometry(zone.operator_polygon, 1.0, self._full)
            op_polygon = np.array(zone.operator_polygon, np.float32)
            geoms.append(
                _ZoneGeometry(
                    zone,
                    box,
                    mask,
                    area,
                    op_box,
                    op_mask,
                    op_area,
                    full_box,
                    op_full_box,
                    op_polygon,
                )
            )
        self._geoms = geoms
        self._background: np.ndarray | None = None
        self._frame_no = 0
        self._qr = QrReader(vision)
        self._cylinders = (
            cylinder_detector if cylinder_detector is not None else load_cylinder_detector(vision)
        )
        self._boxes: tuple[tuple[float, float, float, float], ...] = ()

    @property
    def uses_detector(self) -> bool:
        """True when presence comes from the cylinder detector, not the background."""
        return self._cylinders is not None

    @property
    def cylinder_boxes(self) -> tuple[tuple[float, float, float, float], ...]:
        """The cylinder boxes of the last detection (full-frame pixels); empty without one."""
        return self._boxes

    @property
    def person_boxes(self) -> tuple[tuple[float, float, float, float], ...]:
        """The people the pose detector last found in the operator areas (full-frame pixels)."""
        return tuple(box for boxes in self._person_boxes.values() for box in boxes)

    @property
    def zone_ids(self) -> list[str]:
        """The zones this analyser watches."""
        return [z.id for z in self._zones]

    def set_background(self, frame: np.ndarray) -> None:
        """Take `frame` (an empty station) as the reference background."""
        self._background = self._prepare(frame).astype(np.float32)

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        if (frame.shape[0], frame.shape[1]) != self._full:
            raise ValueError(
                f"camera {self.camera_id}: frame {frame.shape[1]}x{frame.shape[0]}, calibrated for {self._full[1]}x{self._full[0]}"
            )
        small = cv2.resize(frame, self._small, interpolation=cv2.INTER_AREA)
        return small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)

    def process(self, frame: np.ndarray, at: float) -> list[ZoneObservation]:
        """Analyse one frame; the first frame ever seen becomes the background."""
        grey = self._prepare(frame)
        if self._background is None:
            self._background = grey.astype(np.float32)
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        _, changed = cv2.threshold(diff, self._vision.diff_threshold, 255, cv2.THRESH_BINARY)
        learn = np.zeros_like(grey)
        observations = []
        self._frame_no += 1
        covered = self._detected_mask(frame, grey.shape) if self._cylinders else None
        for index, g in enumerate(self._geoms):
            op_frac = _fraction(changed, g.op_box, g.op_mask, g.op_area)
            if covered is not None:
                frac = _fraction(covered, g.box, g.mask, g.area)
                present = frac >= self._vision.detector_zone_cover
            else:
                frac = _fraction(changed, g.box, g.mask, g.area)
                present = frac >= self._vision.presence_min_fraction
            person = (
                self._person_at(frame, g, index)
                if self._person_detector
                else op_frac >= self._vision.person_min_fraction
            )
            codes: tuple[str, ...] = ()
            # Stagger the QR searches so the zones of one camera do not all decode in one frame.
            if present and (self._frame_no + index) % self._vision.qr_every_n_frames == 0:
                x0, y0, x1, y1 = g.full_box
                codes = self._qr.read(frame[y0:y1, x0:x1], g.zone.id)
            if not present:
                _paint(learn, g.box, g.mask)
            if not person:
                _paint(learn, g.op_box, g.op_mask)
            observations.append(
                ZoneObservation(
                    at,
                    g.zone.id,
                    g.zone.scale_id,
                    present,
                    person,
                    codes,
                    round(frac, 4),
                    round(op_frac, 4),
                )
            )
        if self._vision.background_alpha > 0:
            # Learn only where nothing is present, so a cylinder standing still never fades in.
            cv2.accumulateWeighted(
                grey, self._background, self._vision.background_alpha, mask=learn
            )
        return observations

    def _detected_mask(self, frame: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The detected boxes painted (255) on the small frame; detection every n-th frame."""
        detector = self._cylinders
        if detector is not None and (
            self._frame_no == 1 or self._frame_no % self._vision.detector_every_n_frames == 0
        ):
            found = detector.detect(frame, self._vision.detector_score_threshold)
            self._boxes = tuple(
                (float(d.box[0]), float(d.box[1]), float(d.box[2]), float(d.box[3])) for d in found
            )
        mask = np.zeros(shape[:2], np.uint8)
        s = self._vision.process_scale
        for x0, y0, x1, y1 in self._boxes:
            cv2.rectangle(
                mask,
                (int(round(x0 * s)), int(round(y0 * s))),
                (int(round(x1 * s)), int(round(y1 * s))),
                255,
                -1,
            )
        return mask

    def _person_at(self, frame: np.ndarray, g: _ZoneGeometry, index: int) -> bool:
        """Pose detector on the operator area, every n frames; the last answer is held between."""
        detector = self._person_detector
        zone_id = g.zone.id
        if detector is not None and (
            zone_id not in self._people
            or (self._frame_no + index) % self._vision.person_every_n_frames == 0
        ):
            x0, y0, x1, y1 = g.op_full_box
            people = detector.detect(frame[y0:y1, x0:x1])
            self._person_boxes[zone_id] = tuple(
                (
                    float(p.box[0]) + x0,
                    float(p.box[1]) + y0,
                    float(p.box[2]) + x0,
                    float(p.box[3]) + y0,
                )
                for p in people
            )
            self._people[zone_id] = any(
                cv2.pointPolygonTest(
                    g.op_polygon,
                    ((p.box[0] + p.box[2]) / 2 + x0, (p.box[1] + p.box[3]) / 2 + y0),
                    False,
                )
                >= 0
                for p in people
            )
        return self._people.get(zone_id, False)


def _fraction(
    changed: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray, area: int
) -> float:
    x0, y0, x1, y1 = box
    hits = cv2.countNonZero(cv2.bitwise_and(changed[y0:y1, x0:x1], mask))
    return hits / area


def _paint(target: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    region = target[y0:y1, x0:x1]
    cv2.bitwise_or(region, mask, dst=region)
