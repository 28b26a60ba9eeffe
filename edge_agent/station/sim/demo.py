"""A short scripted shift for demos: clean fills plus a few violations, through the real pipeline.

    python -m edge_agent.station.sim.demo --out demo_out/

writes events.jsonl (wire-format StationFillEvent / StationViolationEvent) and report.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_agent.station.events import MemorySink
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.runner import ScenarioResult, run_scenario
from edge_agent.station.sim.scenario import (
    Action,
    Login,
    OpenValve,
    Person,
    Place,
    Remove,
    Scan,
    Scenario,
    make_layout,
    station_config,
)

logger = logging.getLogger(__name__)


def _fill(
    t: float, scale: str, code: str, label: str | None = None, net: float = 14.0
) -> list[Action]:
    return [
        Place(t, scale, label or code),
        Scan(t + 1, scale, code),
        OpenValve(t + 2, scale, net),
        Remove(t + 24, scale),
    ]


def demo_shift() -> tuple[Scenario, int]:
    """The demo scenario and its zones per camera (one camera, four scales)."""
    s1, s2, s3, s4 = "S101", "S102", "S103", "S104"
    actions: list[Action] = []
    for scale in (s1, s2, s3, s4):
        actions += [Person(0, scale, True), Login(0, scale, reg.FILLER)]
    actions += _fill(1, s1, reg.GOOD[0]) + _fill(1, s2, reg.GOOD[1])
    actions += _fill(1, s3, reg.FOREIGN)  # refused: 体外循环
    actions += [
        Place(1, s4, reg.GOOD[2]),
        OpenValve(3, s4, 14.0, bypass=True),
        Remove(25, s4),
    ]  # unscanned
    actions += _fill(30, s1, reg.GOOD[3], net=16.0)  # overfill
    actions += _fill(30, s2, reg.GOOD[4], label=reg.GOOD[9])  # swapped code
    actions += _fill(30, s3, reg.GOOD[5])
    return Scenario("demo-shift", 60.0, tuple(actions)), 4


def run_demo() -> tuple[ScenarioResult, MemorySink]:
    """Play the demo shift."""
    scenario, zones = demo_shift()
    layout = make_layout(1, zones)
    sink = MemorySink()
    result = run_scenario(
        station_config(layout, reg.STATION_ID), layout, scenario, reg.sim_registry(), sink
    )
    return result, sink


def main(argv: list[str] | None = None) -> int:
    """Run the demo shift and write its events and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for events.jsonl and report.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result, sink = run_demo()
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "events.jsonl").open("w", encoding="utf-8") as f:
        for event in sink.events:
            f.write(event.model_dump_json() + "\n")
    report = result.report.to_dict()
    (args.out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
