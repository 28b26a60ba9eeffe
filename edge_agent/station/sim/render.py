"""Renders synthetic station frames: floor, scale platforms, cylinders with real QR labels, fillers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import segno

from edge_agent.station.sim.scenario import CellGeometry, SimLayout

CYLINDER_BGR = (150, 175, 205)
"""A light tan steel body: far enough from the grey floor in luminance for the difference."""


@lru_cache(maxsize=512)
def qr_modules(text: str) -> np.ndarray:
    """The QR symbol for `text` (error level M) with its 4-module quiet zone; 1 = dark."""
    symbol = segno.make(text, error="m", micro=False)
    matrix = np.array([list(row) for row in symbol.matrix], dtype=np.uint8)
    return np.pad(matrix, 4)


def qr_image(text: str, module_px: float) -> np.ndarray:
    """The QR label as a BGR image, `module_px` pixels per module.

    A whole number gives sharp module edges; a fraction is drawn 8 times larger and
    area-averaged down, as a camera would see a label between pixel sizes.
    """
    modules = qr_modules(text)
    grey = np.where(modules == 1, 20, 245).astype(np.uint8)
    if float(module_px).is_integer():
        m = int(module_px)
        big = cv2.resize(grey, None, fx=m, fy=m, interpolation=cv2.INTER_NEAREST)
    else:
        fine = cv2.resize(grey, None, fx=8, fy=8, interpolation=cv2.INTER_NEAREST)
        side = int(round(modules.shape[0] * module_px))
        big = cv2.resize(fine, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


@dataclass
class CellState:
    """What the renderer draws in one cell."""

    label_code: str | None = None
    person: bool = False


class Renderer:
    """Draws frames of one layout; the background is fixed per seed, the noise varies per frame."""

    def __init__(
        self, layout: SimLayout, seed: int = 0, module_px: float = 4, noise_sigma: float = 3.0
    ) -> None:
        self._layout = layout
        self._module_px = module_px
        rng = np.random.default_rng(seed)
        self._rng = rng
        self._background = self._draw_background(rng)
        # A few noise fields reused in turn: fresh noise per frame would cost more than the analysis.
        self._noise = [
            np.repeat(
                rng.normal(0.0, noise_sigma, (layout.height, layout.width, 1)).astype(np.int16),
                3,
                axis=2,
            )
            for _ in range(4)
        ]
        self._frame_no = 0

    @property
    def background(self) -> np.ndarray:
        """The empty station (no cylinders, nobody)."""
        return self._background.copy()

    def _draw_background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self._layout.height, self._layout.width
        ramp = (
            np.linspace(85, 115, w, dtype=np.float32)[None, :]
            + np.linspace(-8, 8, h, dtype=np.float32)[:, None]
        )
        img = np.repeat(ramp[:, :, None], 3, axis=2)
        img += rng.normal(0.0, 4.0, (h // 8 + 1, w // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:h, :w]
        img = np.clip(img, 0, 255).astype(np.uint8)
        for x in range(0, w, 160):
            cv2.line(img, (x, 0), (x, h), (70, 72, 75), 1)
        for y in range(0, h, 120):
            cv2.line(img, (0, y), (w, y), (70, 72, 75), 1)
        for cell in self._layout.cells:
            x0, y0, x1, y1 = cell.zone
            base_y = y1 - max((y1 - y0) // 10, 8)
            cv2.rectangle(img, (x0 + 6, base_y), (x1 - 6, y1 - 2), (60, 60, 62), -1)
            cv2.rectangle(img, (x0 + 6, base_y), (x1 - 6, y1 - 2), (130, 130, 130), 2)
        return img

    def render(
        self, camera_id: str, cells: dict[str, CellState], blur_sigma: float = 0.0
    ) -> np.ndarray:
        """One frame of `camera_id` with the given cell states."""
        frame = self._background.copy()
        for cell in self._layout.cells:
            if cell.camera_id != camera_id:
                continue
            state = cells.get(cell.scale_id)
            if state is None:
                continue
            if state.label_code is not None:
                self._draw_cylinder(frame, cell, state.label_code)
            if state.person:
                self._draw_person(frame, cell)
        noise = self._noise[self._frame_no % len(self._noise)]
        self._frame_no += 1
        frame = cv2.add(frame, noise, dtype=cv2.CV_8U)
        if blur_sigma > 0:
            frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
        return frame

    def _draw_cylinder(self, frame: np.ndarray, cell: CellGeometry, code: str) -> None:
        x0, y0, x1, y1 = cell.zone
        zw, zh = x1 - x0, y1 - y0
        label = qr_image(code, self._module_px)
        lw = label.shape[1]
        bw = min(max(int(zw * 0.72), lw + 12), zw - 8)
        bx0 = x0 + (zw - bw) // 2
        base = y1 - max(zh // 10, 8)
        top = y0 + int(zh * 0.14)
        # Body with a horizontal shading profile so it reads as a round cylinder.
        profile = 0.72 + 0.28 * np.cos(np.linspace(-1.2, 1.2, bw))
        body = (np.array(CYLINDER_BGR, np.float32)[None, None, :] * profile[None, :, None]).astype(
            np.uint8
        )
        frame[top:base, bx0 : bx0 + bw] = np.repeat(body, base - top, axis=0)
        cv2.ellipse(
            frame, (bx0 + bw // 2, top), (bw // 2, max(bw // 5, 6)), 0, 180, 360, CYLINDER_BGR, -1
        )
        cv2.rectangle(
            frame,
            (bx0 + bw // 2 - 8, top - bw // 5 - 18),
            (bx0 + bw // 2 + 8, top - bw // 5 + 2),
            (40, 40, 40),
            -1,
        )
        lh = label.shape[0]
        ly = min(top + (base - top - lh) // 3, base - lh)
        lx = bx0 + (bw - lw) // 2
        if lx >= 0 and ly >= 0 and lw <= bw:
            frame[ly : ly + lh, lx : lx + lw] = label

    def _draw_person(self, frame: np.ndarray, cell: CellGeometry) -> None:
        x0, y0, x1, y1 = cell.operator
        w, h = x1 - x0, y1 - y0
        cx = x0 + w // 2
        coverall = (215, 218, 222)
        head_r = max(int(min(w, h) * 0.12), 6)
        cv2.circle(frame, (cx, y0 + head_r + 4), head_r, (120, 160, 205), -1)
        cv2.circle(
            frame, (cx, y0 + head_r + 2), head_r, (40, 110, 230), -1, lineType=cv2.LINE_8
        )  # safety helmet
        torso_top = y0 + 2 * head_r + 8
        torso_bottom = y0 + int(h * 0.62)
        cv2.rectangle(
            frame, (cx - int(w * 0.28), torso_top), (cx + int(w * 0.28), torso_bottom), coverall, -1
        )
        cv2.line(
            frame,
            (cx + int(w * 0.25), torso_top + 10),
            (x1 + 4, torso_top + int(h * 0.2)),
            coverall,
            max(w // 10, 4),
        )
        cv2.rectangle(frame, (cx - int(w * 0.25), torso_bottom), (cx - 4, y1 - 4), coverall, -1)
        cv2.rectangle(frame, (cx + 4, torso_bottom), (cx + int(w * 0.25), y1 - 4), coverall, -1)
