"""QR reading of small, blurred labels: the Wiener deblurring ladder over the frames a
cylinder stands for (edge_agent.station.vision.QrReader)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_agent.station.config import VisionConfig
from edge_agent.station.sim.render import CellState, Renderer
from edge_agent.station.sim.scenario import make_layout, station_config
from edge_agent.station.vision import ZoneAnalyzer

LAYOUT = make_layout(cameras=1, zones_per_camera=8)
CELLS = [c.scale_id for c in LAYOUT.cells]
BLUR = 1.5  # camera px, on 2 px modules (58 px codes): nothing reads the crop as it is
LADDER = (0.5, 0.8, 1.1, 1.4, 1.7, 2.0)  # the blur itself is not on it


def _analyzer(**vision: object) -> tuple[ZoneAnalyzer, Renderer]:
    config = station_config(LAYOUT, vision=VisionConfig(qr_every_n_frames=1, **vision))
    renderer = Renderer(LAYOUT, seed=4, module_px=2)
    analyzer = ZoneAnalyzer("cam1", config.zones, config.vision, (LAYOUT.width, LAYOUT.height))
    analyzer.set_background(renderer.render("cam1", {}, BLUR))
    return analyzer, renderer


def _frames_until_read(
    analyzer: ZoneAnalyzer, renderer: Renderer, cell: str, code: str, limit: int = 12
) -> int | None:
    """Frames until the zone of `cell` reads `code` (None within `limit`); no wrong read."""
    states = {cell: CellState(label_code=code)}
    for n in range(1, limit + 1):
        obs = {o.scale_id: o for o in analyzer.process(renderer.render("cam1", states, BLUR), 0)}
        assert obs[cell].codes in ((), (code,)), obs[cell].codes
        if obs[cell].codes == (code,):
            return n
    return None


def test_a_blurred_small_code_is_read_only_with_deblurring() -> None:
    plain, renderer = _analyzer(qr_deblur_sigmas=())
    assert _frames_until_read(plain, renderer, CELLS[2], "SD-LPG-000301") is None
    deblurring, renderer = _analyzer(qr_deblur_sigmas=LADDER, qr_deblur_per_read=2)
    found = _frames_until_read(deblurring, renderer, CELLS[2], "SD-LPG-000301")
    # Two sigmas per read: the ladder is walked over successive frames, not in one.
    assert found is not None and 2 <= found <= len(LADDER) // 2


def test_the_sigma_that_worked_on_the_camera_is_tried_first() -> None:
    analyzer, renderer = _analyzer(qr_deblur_sigmas=LADDER, qr_deblur_per_read=1)
    first = _frames_until_read(analyzer, renderer, CELLS[0], "SD-LPG-000401")
    assert first is not None and first > 1  # 0.5 px and 0.8 px do not undo 1.5 px
    # Another zone of the same camera, a new cylinder: read on its first frame.
    assert _frames_until_read(analyzer, renderer, CELLS[5], "SD-LPG-000402") == 1


def test_no_deblurring_when_upscale_is_one() -> None:
    analyzer, renderer = _analyzer(qr_upscale=1.0)
    assert _frames_until_read(analyzer, renderer, CELLS[1], "SD-LPG-000501", limit=4) is None


@pytest.mark.parametrize("sigmas", [(0.0,), (1.0, 9.0)])
def test_out_of_range_sigmas_are_refused_by_field(sigmas: tuple[float, ...]) -> None:
    with pytest.raises(ValidationError, match="qr_deblur_sigmas"):
        VisionConfig(qr_deblur_sigmas=sigmas)
