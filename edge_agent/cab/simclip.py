"""Generated cab clips from one still photo (tests, bench, demo; no recorded video needed).

A live operator is simulated by turning the head: the face region is mapped onto a vertical
cylinder and rotated, which moves the landmarks in a way no single homography explains (what
the temporal liveness check looks for). A printed photo is `models.liveness.synthetic.
rigid_sequence`: the whole frame moved as a flat sheet.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_agent.cab.liveness import SimulatedDisplay
from edge_agent.cab.types import Frame
from models.liveness import Prompt, Step
from models.liveness.geometry import LEFT_EYE, RIGHT_EYE
from models.types import FloatArray, Image

Box = tuple[float, float, float, float]


def head_turn(image: Image, box: Box, degrees: float, radius: float = 0.6) -> Image:
    """The face in `box` turned `degrees` about a vertical axis (radius in face-box widths)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    r = max(1.0, (x1 - x0) * radius)
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = np.clip((xs - cx) / r, -0.999, 0.999)
    phi = np.clip(np.arcsin(u) - math.radians(degrees), -math.pi / 2, math.pi / 2)
    source_x = cx + r * np.sin(phi)
    # Fade the warp out around the head so the background stays put (a real head in a cab).
    weight = np.clip(1.5 - np.abs(xs - cx) / r, 0, 1) * np.clip(
        1.5 - np.abs(ys - cy) / (r * 1.3), 0, 1
    )
    map_x = (xs + (source_x - xs) * weight).astype(np.float32)
    out = cv2.remap(image, map_x, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, np.uint8)


def live_clip(
    image: Image, box: Box, frames: int, max_degrees: float = 25.0, period: int = 20
) -> list[Image]:
    """`frames` frames of the operator turning the head left and right (one turn per `period`)."""
    if frames < 1 or period < 2:
        raise ValueError("frames must be >= 1 and period >= 2")
    return [
        head_turn(image, box, max_degrees * math.sin(2 * math.pi * i / period))
        for i in range(frames)
    ]


def closed_eyes(image: Image, points: FloatArray) -> Image:
    """The same frame with both eyes shut: lids painted over with the skin just below each eye."""
    out = image.copy()
    for eye in (RIGHT_EYE, LEFT_EYE):
        p = points[list(eye), :2]
        (ex0, ey0), (ex1, ey1) = p.min(axis=0), p.max(axis=0)
        pad = max(2, int(ey1 - ey0))
        x0, x1 = int(ex0) - 2, int(ex1) + 3
        y0, y1 = int(ey0) - pad, int(ey1) + pad
        skin = out[y1 : y1 + (y1 - y0), x0:x1]
        if skin.shape[:2] != (y1 - y0, x1 - x0):
            continue  # eye at the frame edge: leave it open
        out[y0:y1, x0:x1] = cv2.blur(skin, (3, 3))
        mid = int((ey0 + ey1) / 2)
        cv2.line(out, (x0 + 1, mid), (x1 - 1, mid + 1), (40, 30, 30), 1)
    return out


class SimulatedOperator:
    """A FrameFeed of a live operator who moves naturally and follows the challenge prompts.

    It watches the simulated cab display: asked to blink it blinks, asked to turn it turns
    (positive `head_turn` angles are the operator's left in an unmirrored image).
    """

    def __init__(
        self,
        image: Image,
        box: Box,
        points: FloatArray,
        display: SimulatedDisplay,
        fps: float = 15.0,
    ) -> None:
        self.display = display
        self.fps = fps
        self.moving = live_clip(image, box, 20)
        shut = closed_eyes(image, points)
        self.responses: dict[Step, list[Image]] = {
            Step.BLINK: [image, image, shut, shut, image, image],
            Step.TURN_LEFT: [head_turn(image, box, d) for d in (0, 10, 20, 30, 30, 15, 0)],
            Step.TURN_RIGHT: [head_turn(image, box, -d) for d in (0, 10, 20, 30, 30, 15, 0)],
        }
        self._index = 0
        self._step: Prompt | None = None
        self._step_index = 0

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame: natural motion, or the response to the prompt on screen."""
        prompt = self.display.shown[-1] if self.display.current and self.display.shown else None
        if prompt is not self._step:
            self._step, self._step_index = prompt, 0
        if prompt is None:
            image = self.moving[self._index % len(self.moving)]
        else:
            pool = self.responses[prompt.step]
            image = pool[min(self._step_index, len(pool) - 1)]
            self._step_index += 1
        frame = Frame(image, self._index / self.fps, self._index)
        self._index += 1
        return frame
