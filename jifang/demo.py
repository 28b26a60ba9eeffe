"""`jifang demo`: the main job end to end on the embedded defaults, nothing downloaded.

Steps: build the open default pack; start the server on SQLite in a temporary folder;
register a site, a forklift and a filling station; import operators whose certificate
photos are images that installed packages ship; run the cab gate (real ONNX sessions, the
default liveness policy) on generated clips: an authorized operator, a person with no
certificate, an operator whose certificate has expired since the last sync, a printed photo;
deliver the events to the server; run the filling-station agent's scripted shift against the
same server (`edge_agent.station.sim.demo.run_station_demo`); leave the server running until
Ctrl-C.

The world it runs in (pack, server, registry, operators, cab config) is built by
jifang/demo_kit.py, which tests/e2e uses against SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer

from jifang.demo_kit import (
    DEMO_TIMEZONE,
    FORKLIFT,
    FPS,
    SITE,
    STATION_DEVICE,
    Admin,
    RunningServer,
    cab_config,
    cab_scene,
    deliver_all,
    demo_pack,
    demo_people,
    import_operators,
    register_demo,
    serve,
    server_events,
    shipped_faces,
)

if TYPE_CHECKING:
    import numpy as np

    from edge_agent.cab.agent import GateParts
    from edge_agent.cab.gate import FrameFeed
    from edge_agent.cab.types import Decision
    from models.engine import FaceEngine

logger = logging.getLogger(__name__)

app = typer.Typer(help="Run the end-to-end demo on the embedded defaults.")


class ShiftedClock:
    """The cab's clock moved forward: the demo's way of letting a night pass offline."""

    def __init__(self, shift: timedelta) -> None:
        self.shift = shift

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


def next_local_morning(zone: str, now: datetime | None = None) -> timedelta:
    """How far ahead a moment just after the next local midnight is (device time zone).

    The step must cross midnight yet stay under a day, or the synced gallery would be stale
    instead of the certificate expired: it lands 30 min past midnight, or half the time
    already past the last midnight when that is less (shortly after midnight, 00:30 tomorrow
    would be more than 24 h away).
    """
    tz = ZoneInfo(zone)
    local = (now or datetime.now(UTC)).astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    since_last = local - (midnight - timedelta(days=1))
    return midnight - local + min(timedelta(minutes=30), since_last / 2)


@dataclass
class Attempt:
    """One start attempt in the demo and what the gate decided."""

    label: str
    expected: str
    decision: Decision | None = None
    challenge: list[str] = field(default_factory=list)


def run_cab(
    parts: GateParts,
    engine: FaceEngine,
    scenes: dict[str, np.ndarray],
    echo: Callable[[str], None],
) -> list[Attempt]:
    """The four start attempts on generated clips; each is printed with its reason."""
    from edge_agent.cab.liveness import SimulatedDisplay
    from edge_agent.cab.simclip import SimulatedOperator
    from edge_agent.cab.sources import ReplayFeed
    from models.liveness import observe
    from models.liveness.synthetic import rigid_sequence

    gate = parts.gate
    assert gate.verifier is not None
    display = gate.verifier.liveness.display
    # The simulated operators answer the prompts on the simulated screen, and the demo prints
    # them from its log of shown prompts: the demo runs on no other display.
    if not isinstance(display, SimulatedDisplay):
        raise RuntimeError(f"the demo needs the simulated cab display, not {type(display)}")
    screen: SimulatedDisplay = display

    def live(person: str) -> SimulatedOperator:
        seen = observe(engine, scenes[person], 0.0)
        if seen is None or seen.dense is None:
            raise RuntimeError(f"no face with landmarks in the {person} scene")
        return SimulatedOperator(
            scenes[person], seen.face.detection.box, seen.dense.points, screen, FPS
        )

    printed = [image for image, _ in rigid_sequence(scenes["astronaut"], 45, fps=FPS, seed=3)]
    attempts: list[tuple[Attempt, Callable[[], FrameFeed], timedelta | None]] = [
        (
            Attempt("张伟, certified forklift operator (N1), live", "AUTHORIZED"),
            lambda: live("astronaut"),
            None,
        ),
        (Attempt("李强, no certificate, live", "NO_MATCH"), lambda: live("cameraman"), None),
        (
            Attempt("王芳, N1 certificate expired overnight, live", "CERT_EXPIRED"),
            lambda: live("hopper"),
            next_local_morning(parts.config.device.timezone),
        ),
        (
            Attempt("a printed photo of 张伟 held to the camera", "LIVENESS_FAILED"),
            lambda: ReplayFeed(printed, FPS, loop=False),
            None,
        ),
    ]
    results = []
    for attempt, feed, shift in attempts:
        asked = len(screen.shown)
        if shift is not None:
            echo(
                f"   (the cab's clock moves to just after local midnight, +{shift}; "
                "it has not synced since)"
            )
            gate.clock.use_source(ShiftedClock(shift))
        try:
            decision = gate.request_start(feed())
        finally:
            gate.clock.use_source(ShiftedClock(timedelta(0)))
        attempt.decision = decision
        attempt.challenge = [
            f"{p.text.get('zh-CN', '')} / {p.text.get('en', '')}" for p in screen.shown[asked:]
        ]
        for prompt in attempt.challenge:
            echo(f"   screen: {prompt}")
        mark = "ok" if decision.reason.value == attempt.expected else "UNEXPECTED"
        echo(f"{attempt.label:48} -> {decision.reason.value:16} [{mark}] {decision.detail}")
        if decision.authorized:
            gate.engine_started()
            gate.engine_stopped()
        results.append(attempt)
    return results


@dataclass
class DemoResult:
    """What the demo did: the cab attempts and the events the server holds."""

    attempts: list[Attempt]
    server_url: str
    events_on_server: list[dict[str, Any]]
    station: list[str] = field(default_factory=list)


def run_demo(
    work: Path,
    echo: Callable[[str], None],
    model_dir: Path | None = None,
    wait: Callable[[RunningServer], None] | None = None,
    port: int | None = None,
) -> DemoResult:
    """The whole demo in `work`; `wait` is called with the server running (Ctrl-C there)."""
    from edge_agent.cab.agent import build_gate, sync_once
    from edge_agent.config import parse_cab_config
    from edge_agent.station.sim.demo import run_station_demo
    from edge_agent.station.sim.seed import seed_station
    from edge_agent.uplink import Uplink
    from models.build_default import build_default_pack
    from models.engine import FaceEngine
    from models.placeholder import PLACEHOLDER_THRESHOLD
    from models.store import default_model_dir
    from server.settings import ServerSettings

    default = build_default_pack(model_dir or default_model_dir())
    base_engine = FaceEngine(default)
    pack = demo_pack(default, work / "packs", base_engine.contract_id)
    engine = FaceEngine(pack)
    echo(
        f"pack {engine.manifest.name} {engine.manifest.version}; threshold {PLACEHOLDER_THRESHOLD} "
        "is a demo placeholder, not a calibration"
    )
    settings = ServerSettings(data_dir=work / "server", model_dir=pack.parent)
    photos = shipped_faces()
    scenes = {name: cab_scene(engine, photo) for name, photo in photos.items()}
    # The cab's calendar date: an expiry date means the end of that day in its time zone.
    today = datetime.now(ZoneInfo(DEMO_TIMEZONE)).date()
    with serve(settings, face_engine=engine, port=port) as server:
        echo(f"server on SQLite in {settings.data_dir} at {server.url}")
        admin = Admin(server.url, server.admin_password)
        keys = register_demo(admin)
        # The station's registry (station, scales, cylinders, fillers) is the station
        # simulator's own seed, so that its scripted shift meets what it expects.
        seeded = seed_station(admin.http, {}, SITE, STATION_DEVICE)
        echo(
            f"registered site {SITE}, forklift {FORKLIFT}, filling station "
            f"{seeded.station_id} (device {STATION_DEVICE}, its scales, cylinders, fillers)"
        )
        report = import_operators(admin, demo_people(today), photos)
        echo(
            f"imported {len(report.get('added', []))} certificate(s) with photos "
            "(astronaut: scikit-image; Grace Hopper: matplotlib; the cameraman has none)"
        )
        config = parse_cab_config(cab_config(server.url, keys[FORKLIFT], pack, work / "cab"))
        parts = build_gate(config, engine=engine)
        uplink = Uplink(server.url, FORKLIFT, keys[FORKLIFT].key.encode("ascii"), 30.0)
        try:
            sync_once(parts.gate, uplink)
            gallery = parts.gate.cache.gallery
            echo(
                f"cab synced signed gallery v{gallery.version if gallery else '?'} "
                f"({len(gallery.operators) if gallery else 0} operators)"
            )
            attempts = run_cab(parts, engine, scenes, echo)
            delivered = deliver_all(parts, uplink)
            echo(f"cab delivered {delivered} event(s); outbox depth {parts.outbox.depth()}")
        finally:
            uplink.close()
            parts.close()
        items = server_events(server.app, FORKLIFT)
        flagged = sum(1 for e in items if e["flagged"])
        echo(f"server holds {len(items)} event(s) from {FORKLIFT}, {flagged} flagged for review")
        station = keys[STATION_DEVICE]
        echo("filling station: a scripted shift through the station agent")
        station_lines = run_station_demo(
            server.url,
            station.device_id,
            station.key,
            work / "station",
            server_public_key=station.server_public_key,
        )
        for line in station_lines:
            echo(f"   {line}")
        admin.close()
        echo(f"review page: {server.url}/review   (user admin, password {server.admin_password})")
        echo(f"API:         {server.url}/api/v1   (OpenAPI at {server.url}/docs)")
        if wait is not None:
            wait(server)
        return DemoResult(attempts, server.url, list(items), station_lines)


def _wait_for_ctrl_c(server: RunningServer) -> None:
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    typer.echo("server keeps running; Ctrl-C stops everything")
    done.wait()
    typer.echo("stopping")


@app.callback(invoke_without_command=True)
def demo(
    ctx: typer.Context,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="model directory")] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="stop the server once the demo has run")
    ] = False,
    port: Annotated[int | None, typer.Option(help="server port (default: a free one)")] = None,
    keep: Annotated[
        Path | None, typer.Option(help="work in this folder and keep it (default: temporary)")
    ] = None,
) -> None:
    """Server, registry, import, cab agent on generated clips, events; Ctrl-C stops it."""
    if ctx.invoked_subcommand is not None:
        return
    # The demo prints its own lines; the agent's and server's logs would drown them.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)

    def go(work: Path) -> DemoResult:
        return run_demo(work, typer.echo, model_dir, None if no_wait else _wait_for_ctrl_c, port)

    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        result = go(keep)
    else:
        with tempfile.TemporaryDirectory(prefix="jifang-demo-") as tmp:
            result = go(Path(tmp))
    wrong = [
        a for a in result.attempts if a.decision is None or a.decision.reason.value != a.expected
    ]
    if wrong:
        typer.echo(f"{len(wrong)} decision(s) differ from what the demo expects", err=True)
        raise typer.Exit(code=1)
