"""A short scripted shift for demos: clean fills plus a few violations, through the real pipeline.

    python -m edge_agent.station.sim.demo --out demo_out/

writes events.jsonl (wire-format StationFillEvent / StationViolationEvent) and report.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from contract.codes import CertificateStatus
from contract.messages import StationRegistry
from edge_agent.station.agent import make_uplink
from edge_agent.station.events import MemorySink
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.connected import play_against_server, sim_agent_config, sync_now
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


def demo_shift(filler: str = reg.FILLER) -> tuple[Scenario, int]:
    """The demo scenario and its zones per camera (one camera, four scales)."""
    s1, s2, s3, s4 = "S101", "S102", "S103", "S104"
    actions: list[Action] = []
    for scale in (s1, s2, s3, s4):
        actions += [Person(0, scale, True), Login(0, scale, filler)]
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


def _filler_id(message: StationRegistry, category: str) -> str | None:
    """An operator whose certificate lets them fill today (the demo's filler)."""
    today = datetime.now(UTC).date()
    for row in message.fillers:
        if (
            row.category == category
            and row.status == CertificateStatus.VALID
            and row.valid_until >= today
        ):
            return row.operator_id
    return None


def run_station_demo(
    server_url: str,
    device_id: str,
    device_key: str,
    out_dir: Path,
    *,
    server_public_key: str | None = None,
) -> list[str]:
    """Play the demo shift against a running server; printable lines of what happened.

    The server must hold the station (seeded with `sim.seed.seed_station`, `reg.STATION_ID`)
    and `device_id` must be its registered filling_station device. The registry is verified
    with `server_public_key` (registration answer), else $JIFANG_SERVER_PUBLIC_KEY; without a
    key nothing verifies and every scan is refused, which the lines say.
    """
    key = server_public_key or os.environ.get("JIFANG_SERVER_PUBLIC_KEY", "")
    scenario, zones = demo_shift()
    layout = make_layout(1, zones)
    station = station_config(layout, reg.STATION_ID).model_dump(mode="json")
    station["registry_path"] = str(out_dir / "station_registry.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = sim_agent_config(server_url, device_id, device_key, key, out_dir / "store", station)
    required = config.station.rules.required_certificate
    uplink = make_uplink(config)
    lines: list[str] = []
    try:
        message, problem = sync_now(config, uplink)
        if message is None:
            lines.append(f"station {reg.STATION_ID}: registry NOT synced ({problem})")
            lines.append("  every scan is refused (fail closed); fill-enable stays off")
            filler = reg.FILLER
        else:
            lines.append(
                f"station {message.station_id}: registry synced from the server "
                f"({len(message.cylinders)} cylinders, generated {message.generated_at:%H:%M:%S} UTC)"
            )
            filler = _filler_id(message, required) or reg.FILLER
        scenario, _ = demo_shift(filler)
        run = play_against_server(config, layout, scenario, uplink)
    finally:
        uplink.close()
    report = run.result.report
    lines.append(
        f"shift {report.started_at:%H:%M:%S}-{report.ended_at:%H:%M:%S}: "
        f"{report.fills_scale} fills on the scales, {report.fills_camera} seen by camera, "
        f"{report.scans_accepted} scans accepted, {report.scans_rejected} refused"
    )
    for reason, count in sorted(report.violations.items()):
        lines.append(f"  violation {reason}: {count}")
    if report.scans_refused_stale_registry:
        lines.append(f"  scans refused (registry stale): {report.scans_refused_stale_registry}")
    lines.append(
        f"events delivered to the server: {run.delivered}"
        + (f", {run.undelivered} still queued" if run.undelivered else "")
    )
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return lines


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
