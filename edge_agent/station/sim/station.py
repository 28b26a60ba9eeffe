"""The simulated station: scale physics behind the fill-enable, the scan stream, and the frames."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from edge_agent.station.domain import CodeScan, FillerLogin, LoginMethod, ScaleReading
from edge_agent.station.sim.render import CellState, Renderer
from edge_agent.station.sim.scenario import (
    Login,
    OpenValve,
    Person,
    Place,
    Remove,
    Scan,
    Scenario,
    SimLayout,
)

logger = logging.getLogger(__name__)


@dataclass
class _SimScale:
    gross_kg: float = 0.0
    tare_kg: float = 0.0
    valve_requested: bool = False
    target_net_kg: float = 0.0
    rate_kg_s: float = 1.0
    bypass: bool = False
    fill_enable: bool = False


class SimScaleBank:
    """The scales of the simulated station; gas flows only while fill-enable is on, or bypassed."""

    def __init__(self, scale_ids: list[str]) -> None:
        self._scales = {s: _SimScale() for s in scale_ids}
        self._lock = threading.Lock()
        self.enable_writes: list[tuple[str, bool]] = []

    def set_fill_enable(self, scale_id: str, enabled: bool) -> None:
        """The agent's interlock output (FillInterlock)."""
        with self._lock:
            self._scales[scale_id].fill_enable = enabled
            self.enable_writes.append((scale_id, enabled))

    def fill_enable(self, scale_id: str) -> bool:
        """Whether the scale's fill-enable is on."""
        with self._lock:
            return self._scales[scale_id].fill_enable

    def place(self, scale_id: str, tare_kg: float) -> None:
        """Put an empty cylinder on the scale."""
        with self._lock:
            s = self._scales[scale_id]
            s.gross_kg = s.tare_kg = tare_kg
            s.valve_requested = False

    def remove(self, scale_id: str) -> None:
        """Take the cylinder off."""
        with self._lock:
            s = self._scales[scale_id]
            s.gross_kg = s.tare_kg = 0.0
            s.valve_requested = False

    def open_valve(self, action: OpenValve) -> None:
        """The filler opens the filling gun."""
        with self._lock:
            s = self._scales[action.scale_id]
            s.valve_requested = True
            s.target_net_kg = action.target_net_kg
            s.rate_kg_s = action.rate_kg_s
            s.bypass = action.bypass

    def step(self, dt: float) -> None:
        """Advance the gas flow by `dt` seconds."""
        with self._lock:
            for s in self._scales.values():
                if not s.valve_requested or s.tare_kg <= 0:
                    continue
                if not (s.fill_enable or s.bypass):
                    # The solenoid valve closes with fill-enable; the gun stays shut until reopened.
                    s.valve_requested = False
                    continue
                s.gross_kg = min(s.gross_kg + s.rate_kg_s * dt, s.tare_kg + s.target_net_kg)
                if s.gross_kg >= s.tare_kg + s.target_net_kg:
                    s.valve_requested = False

    def read(self, scale_id: str, at: float) -> ScaleReading:
        """The scale's telemetry now."""
        with self._lock:
            s = self._scales[scale_id]
            flowing = s.valve_requested and (s.fill_enable or s.bypass)
            return ScaleReading(at, scale_id, round(s.gross_kg, 3), flowing)

    def grams(self, scale_id: str) -> tuple[int, bool]:
        """Gross mass in grams and valve state (for the Modbus and line-protocol twins)."""
        with self._lock:
            s = self._scales[scale_id]
            return int(round(s.gross_kg * 1000)), s.valve_requested and (s.fill_enable or s.bypass)


class SimScale:
    """One simulated scale behind the `Scale` boundary protocol."""

    def __init__(self, bank: SimScaleBank, scale_id: str) -> None:
        self.scale_id = scale_id
        self._bank = bank

    def read(self, at: float) -> ScaleReading:
        """Current telemetry."""
        return self._bank.read(self.scale_id, at)

    def set_fill_enable(self, enabled: bool) -> None:
        """Write the fill-enable."""
        self._bank.set_fill_enable(self.scale_id, enabled)

    def close(self) -> None:
        """Nothing to release."""


class SimStation:
    """Plays a scenario: applies due actions, steps the scales, renders each camera."""

    def __init__(
        self,
        layout: SimLayout,
        scenario: Scenario,
        *,
        seed: int = 0,
        module_px: int = 4,
        blur_sigma: float = 0.0,
        bank: SimScaleBank | None = None,
    ) -> None:
        self.layout = layout
        self.scenario = scenario
        self.scales = bank or SimScaleBank([c.scale_id for c in layout.cells])
        self.renderer = Renderer(layout, seed=seed, module_px=module_px)
        self._cells = {c.scale_id: CellState() for c in layout.cells}
        self._pending = sorted(scenario.actions, key=lambda a: a.at)
        self._blur = blur_sigma
        self._t = 0.0
        self._lock = threading.Lock()  # the driver advances while camera workers render

    def advance(self, t: float) -> tuple[list[CodeScan], list[FillerLogin]]:
        """Move to scenario time `t`; return the scans and logins that happened."""
        with self._lock:
            return self._advance(t)

    def _advance(self, t: float) -> tuple[list[CodeScan], list[FillerLogin]]:
        scans: list[CodeScan] = []
        logins: list[FillerLogin] = []
        self.scales.step(max(t - self._t, 0.0))
        self._t = t
        while self._pending and self._pending[0].at <= t:
            action = self._pending.pop(0)
            if isinstance(action, Place):
                self.scales.place(action.scale_id, action.tare_kg)
                self._cells[action.scale_id].label_code = action.label_code
            elif isinstance(action, Remove):
                self.scales.remove(action.scale_id)
                self._cells[action.scale_id].label_code = None
            elif isinstance(action, Scan):
                scans.append(CodeScan(t, action.scale_id, action.code))
            elif isinstance(action, Login):
                logins.append(
                    FillerLogin(t, action.scale_id, action.operator_id, LoginMethod.LOGIN)
                )
            elif isinstance(action, Person):
                self._cells[action.scale_id].person = action.present
            elif isinstance(action, OpenValve):
                self.scales.open_valve(action)
        return scans, logins

    def sim_scales(self) -> dict[str, SimScale]:
        """The scales as boundary objects (for ScaleSet.from_config)."""
        return {c.scale_id: SimScale(self.scales, c.scale_id) for c in self.layout.cells}

    def render(self, camera_id: str) -> np.ndarray:
        """The camera's frame at the current time."""
        with self._lock:
            return self.renderer.render(camera_id, self._cells, self._blur)

    def empty_frame(self, camera_id: str) -> np.ndarray:
        """The camera's frame of the empty station (calibration background)."""
        return self.renderer.render(camera_id, {}, self._blur)
