"""Zone analysis on rendered frames: presence, person, QR codes, and bad frames."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.station.config import VisionConfig
from edge_agent.station.sim.render import CellState, Renderer
from edge_agent.station.sim.scenario import make_layout, station_config
from edge_agent.station.vision import QrReader, ZoneAnalyzer

LAYOUT = make_layout(cameras=1, zones_per_camera=8)
CELLS = [c.scale_id for c in LAYOUT.cells]


def _analyzer(**vision: object) -> tuple[ZoneAnalyzer, Renderer]:
    config = station_config(LAYOUT, vision=VisionConfig(qr_every_n_frames=1, **vision))
    renderer = Renderer(LAYOUT, seed=3)
    analyzer = ZoneAnalyzer("cam1", config.zones, config.vision, (LAYOUT.width, LAYOUT.height))
    analyzer.set_background(renderer.render("cam1", {}))
    return analyzer, renderer


def test_presence_person_and_code_per_zone() -> None:
    analyzer, renderer = _analyzer()
    states = {
        CELLS[0]: CellState(label_code="SD-LPG-000101", person=True),
        CELLS[3]: CellState(label_code="SD-LPG-000104"),
        CELLS[5]: CellState(person=True),
    }
    obs = {o.scale_id: o for o in analyzer.process(renderer.render("cam1", states), 1.0)}
    assert set(obs) == set(CELLS)
    assert {s for s, o in obs.items() if o.cylinder_present} == {CELLS[0], CELLS[3]}
    assert {s for s, o in obs.items() if o.person_present} == {CELLS[0], CELLS[5]}
    assert obs[CELLS[0]].codes == ("SD-LPG-000101",)
    assert obs[CELLS[3]].codes == ("SD-LPG-000104",)
    assert all(o.codes == () for s, o in obs.items() if s not in (CELLS[0], CELLS[3]))


@pytest.mark.parametrize("backend", ["zxing", "opencv"])
def test_qr_backends_read_simulator_labels(backend: str) -> None:
    analyzer, renderer = _analyzer(qr_backend=backend)
    states = {c: CellState(label_code=f"SD-LPG-{i:06d}") for i, c in enumerate(CELLS)}
    obs = analyzer.process(renderer.render("cam1", states), 0.0)
    assert [o.codes for o in obs] == [(f"SD-LPG-{i:06d}",) for i in range(len(CELLS))]


def test_empty_frame_shows_nothing_and_no_code_on_blank() -> None:
    analyzer, renderer = _analyzer()
    obs = analyzer.process(renderer.render("cam1", {}), 0.0)
    assert not any(o.cylinder_present or o.person_present for o in obs)
    assert QrReader(VisionConfig()).read(np.full((200, 200, 3), 128, np.uint8)) == ()


def test_frame_of_wrong_size_is_refused() -> None:
    analyzer, _ = _analyzer()
    with pytest.raises(ValueError, match=r"camera cam1: frame 640x480, calibrated for 1280x720"):
        analyzer.process(np.zeros((480, 640, 3), np.uint8), 0.0)


def test_standing_cylinder_does_not_fade_into_the_background() -> None:
    analyzer, renderer = _analyzer(background_alpha=0.2)
    states = {CELLS[1]: CellState(label_code="SD-LPG-000102")}
    for step in range(60):
        obs = {
            o.scale_id: o for o in analyzer.process(renderer.render("cam1", states), float(step))
        }
    assert obs[CELLS[1]].cylinder_present
