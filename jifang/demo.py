"""`jifang demo`: the main job end to end on the embedded defaults, nothing downloaded.

Steps: build the open default pack; start the server on SQLite in a temporary folder;
register a site, a forklift and a filling station; import operators whose certificate
photos are images that installed packages ship; run the cab gate (real ONNX sessions, the
default liveness policy) on generated clips: an authorized operator, a person with no
certificate, an operator whose certificate has expired since the last sync, a printed photo;
deliver the events to the server; run the filling-station agent's scripted shift against the
same server (`edge_agent.station.sim.demo.run_station_demo`); leave the server running until
Ctrl-C.

The building blocks are also what tests/e2e uses against SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

    from edge_agent.cab.agent import GateParts
    from edge_agent.cab.gate import FrameFeed
    from edge_agent.cab.types import Decision
    from models.engine import FaceEngine
    from server.settings import ServerSettings

logger = logging.getLogger(__name__)

app = typer.Typer(help="Run the end-to-end demo on the embedded defaults.")

DEMO_CALIBRATION = "demo"
DEMO_THRESHOLD = 0.92
"""Cosine threshold of the demo's placeholder calibration (the value the test fixtures use).

The open pack ships without a calibration; `jifang calibrate threshold` makes a real one
from a site's photos. This placeholder only lets 1:N run in the demo."""
DEMO_IMPOSTOR_PAIRS = 3000
"""Declared so that the placeholder nominally supports FMR 1e-3 (rule of three)."""
FPS = 15.0
PASSWORD_BYTES = 12
SERVER_START_S = 20.0
ENTERPRISE, SITE = "ent-demo", "site-demo"
FORKLIFT, STATION_DEVICE = "FL-DEMO-01", "ST-DEMO-01"


def id_number(serial: int, birth: str = "19850612", region: str = "370102") -> str:
    """A valid GB 11643 resident ID number (Jinan prefix) for a serial number."""
    body = f"{region}{birth}{serial % 1000:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


# --- faces that installed packages ship ----------------------------------------------------


def shipped_faces() -> dict[str, np.ndarray]:
    """BGR photos: scikit-image's astronaut and cameraman, matplotlib's Grace Hopper."""
    import cv2
    import numpy as np
    import skimage.data
    from matplotlib import cbook

    path = Path(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    hopper = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if hopper is None:
        raise FileNotFoundError(f"{path}: matplotlib's sample photo is not readable")
    return {
        "astronaut": np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1]),
        "cameraman": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR),
        "hopper": np.asarray(hopper, np.uint8),
    }


def cab_scene(engine: FaceEngine, photo: np.ndarray, face_share: float = 0.3) -> np.ndarray:
    """A 640x480 cab-camera frame of the person: face about `face_share` of the frame height."""
    import cv2
    import numpy as np

    faces = engine.detect(photo)
    if not faces:
        raise ValueError("no face in the demo photo")
    x0, y0, x1, y1 = max(
        (f.detection.box for f in faces), key=lambda b: (b[2] - b[0]) * (b[3] - b[1])
    )
    side = (y1 - y0) / face_share
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = photo.shape[:2]
    pad = int(side)
    padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    top, left = int(cy - side / 2) + pad, int(cx - side / 2) + pad
    crop = padded[top:top + int(side), left:left + int(side)]
    square = cv2.resize(crop, (480, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.copyMakeBorder(square, 0, 0, 80, 80, cv2.BORDER_REPLICATE))


def photo_jpeg(photo: np.ndarray) -> bytes:
    """A certificate photo file."""
    import cv2

    ok, data = cv2.imencode(".jpg", photo)
    if not ok:
        raise ValueError("photo could not be encoded")
    return bytes(data.tobytes())


# --- the pack ------------------------------------------------------------------------------


def demo_pack(default_pack: Path, root: Path, contract_id: str) -> Path:
    """The default pack linked into `root`, plus the demo's placeholder calibration."""
    from models.manifest import Calibration, CalibrationBlock, write_calibration

    pack = root / default_pack.name
    pack.mkdir(parents=True, exist_ok=True)
    for item in default_pack.iterdir():
        target = pack / item.name
        if item.name != "calibration.yaml" and not target.exists():
            target.symlink_to(item.resolve())
    placeholder = Calibration(
        threshold=DEMO_THRESHOLD,
        target_fmr=1e-3,
        genuine_pairs=0,
        impostor_pairs=DEMO_IMPOSTOR_PAIRS,
        data="demo placeholder: NOT a calibration; never deploy",
        contract_id=contract_id,
        method="fixed value for the demo",
    )
    write_calibration(pack, CalibrationBlock(calibrations={DEMO_CALIBRATION: placeholder}))
    return pack


# --- the server ----------------------------------------------------------------------------


@dataclass
class RunningServer:
    """The server app served by uvicorn in a thread on loopback."""

    app: FastAPI
    url: str
    admin_password: str


@contextmanager
def serve(
    settings: ServerSettings, face_engine: FaceEngine | None = None, port: int | None = None
) -> Iterator[RunningServer]:
    """Create the app, an admin account, and serve it until the block ends."""
    from server.app import create_app
    from server.domain import Role
    from server.security import create_user
    from server.threaded import serve_in_thread

    application = create_app(settings, face_engine=face_engine)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    with application.state.sessions() as session:
        create_user(session, "admin", password, Role.ADMIN)
        session.commit()
    with serve_in_thread(application, port=port) as url:
        try:
            yield RunningServer(application, url, password)
        finally:
            application.state.engine.dispose()


class Admin:
    """An admin's HTTP session on the server's API."""

    def __init__(self, url: str, password: str, username: str = "admin") -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)
        login = self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        self._check(login, 200)
        self.http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    @staticmethod
    def _check(response: Any, status: int) -> Any:
        if response.status_code != status:
            raise RuntimeError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text[:500]}"
            )
        return response.json() if response.content else None

    def post(self, path: str, body: dict[str, Any], status: int = 201) -> Any:
        """POST JSON; anything but `status` is an error naming the call."""
        return self._check(self.http.post(path, json=body), status)

    def get(self, path: str, **params: Any) -> Any:
        """GET JSON."""
        return self._check(self.http.get(path, params=params), 200)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


@dataclass(frozen=True)
class DeviceKey:
    """What registration returns once: the device's key and the server's public key."""

    device_id: str
    key: str
    server_public_key: str


def register_demo(admin: Admin) -> dict[str, DeviceKey]:
    """An enterprise, a site, a forklift (accepts N1) and a filling-station device."""
    admin.post("/api/v1/enterprises", {"id": ENTERPRISE, "name": "济南特种设备示范企业"})
    admin.post("/api/v1/sites", {"id": SITE, "enterprise_id": ENTERPRISE, "name": "历城厂区"})
    keys = {}
    for device_id, kind, rules in (
        (FORKLIFT, "forklift", [{"category": "N1"}]),
        (STATION_DEVICE, "filling_station", []),
    ):
        got = admin.post(
            "/api/v1/devices",
            {"device_id": device_id, "kind": kind, "site_id": SITE, "accepted_categories": rules},
        )
        keys[device_id] = DeviceKey(device_id, got["device_key"], got["server_public_key"])
    return keys


@dataclass(frozen=True)
class Person:
    """Someone in the demo: a photo, and the certificate the office holds (if any)."""

    key: str
    name: str
    photo: str
    certificate_no: str | None = None
    expiry: date | None = None
    serial: int = 0


def demo_people(today: date) -> list[Person]:
    """Who appears: a certified operator, one whose certificate expires today, a stranger."""
    return [
        Person("operator", "张伟", "astronaut", "T370102000001", date(2028, 2, 29), 1),
        # Valid through today: in today's gallery; expired once the cab's date rolls over.
        Person("expired", "王芳", "hopper", "T370102000002", today, 2),
        Person("stranger", "李强 (no certificate)", "cameraman"),
    ]


def import_operators(
    admin: Admin, people: list[Person], photos: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The certification office's export (CSV with Chinese headers + photo ZIP), imported."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["姓名", "身份证号", "证书编号", "作业项目代号", "发证日期", "有效期至",
                     "发证机关", "照片", "工作场所"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for person in people:
            if person.certificate_no is None or person.expiry is None:
                continue
            name = f"{person.key}.jpg"
            bundle.writestr(name, photo_jpeg(photos[person.photo]))
            writer.writerow([
                person.name, id_number(person.serial), person.certificate_no, "N1",
                (person.expiry - timedelta(days=4 * 365)).isoformat(), person.expiry.isoformat(),
                "济南市市场监督管理局", name, SITE,
            ])
    response = admin.http.post(
        "/api/v1/sync/operators",
        files={
            "file": ("证书导出.csv", out.getvalue().encode("utf-8-sig")),
            "photos": ("photos.zip", archive.getvalue()),
        },
    )
    return dict(Admin._check(response, 200))


# --- the cab -------------------------------------------------------------------------------


def cab_config(
    server_url: str, device: DeviceKey, pack: Path, store_dir: Path, **sections: dict[str, Any]
) -> dict[str, Any]:
    """The forklift agent's config tree (default liveness policy)."""
    data: dict[str, Any] = {
        "device": {"id": device.device_id, "kind": "forklift", "site_id": SITE},
        "server": {"url": server_url, "device_key": device.key,
                   "public_key": device.server_public_key},
        "models": {"dir": str(pack.parent), "pack": pack.name, "calibration": DEMO_CALIBRATION},
        "camera": {"source": str(store_dir / "camera"), "fps": FPS},
        "quality": {"min_face_px": 60, "max_pitch_deg": 40.0},
        # The demo lets one night pass on the cab (CERT_EXPIRED): a gallery synced up to
        # two days ago still counts as fresh here.
        "gate": {"window_s": 3.0, "max_gallery_age_s": 2 * 86_400},
        "store": {"dir": str(store_dir)},
        "status": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


class ShiftedClock:
    """The cab's clock moved forward: the demo's way of letting a night pass offline."""

    def __init__(self, shift: timedelta) -> None:
        self.shift = shift

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


def next_local_morning(zone: str) -> timedelta:
    """How far ahead 00:30 tomorrow (device time zone) is from now."""
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(zone))
    morning = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(),
                               tzinfo=ZoneInfo(zone)) + timedelta(minutes=30)
    return morning - now


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

    def live(person: str) -> SimulatedOperator:
        seen = observe(engine, scenes[person], 0.0)
        if seen is None or seen.dense is None:
            raise RuntimeError(f"no face with landmarks in the {person} scene")
        assert isinstance(display, SimulatedDisplay)
        return SimulatedOperator(scenes[person], seen.face.detection.box, seen.dense.points,
                                 display, FPS)

    printed = [image for image, _ in rigid_sequence(scenes["astronaut"], 45, fps=FPS, seed=3)]
    attempts: list[tuple[Attempt, Callable[[], FrameFeed], timedelta | None]] = [
        (Attempt("张伟, certified forklift operator (N1), live", "AUTHORIZED"),
         lambda: live("astronaut"), None),
        (Attempt("李强, no certificate, live", "NO_MATCH"), lambda: live("cameraman"), None),
        (Attempt("王芳, N1 certificate expired overnight, live", "CERT_EXPIRED"),
         lambda: live("hopper"), next_local_morning(parts.config.device.timezone)),
        (Attempt("a printed photo of 张伟 held to the camera", "LIVENESS_FAILED"),
         lambda: ReplayFeed(printed, FPS, loop=False), None),
    ]
    results = []
    for attempt, feed, shift in attempts:
        asked = len(getattr(display, "shown", []))
        if shift is not None:
            echo(f"   (the cab's clock moves to tomorrow 00:30 local time, +{shift}; "
                 "it has not synced since)")
            gate.clock.use_source(ShiftedClock(shift))
        try:
            decision = gate.request_start(feed())
        finally:
            gate.clock.use_source(ShiftedClock(timedelta(0)))
        attempt.decision = decision
        attempt.challenge = [
            f"{p.text.get('zh-CN', '')} / {p.text.get('en', '')}"
            for p in getattr(display, "shown", [])[asked:]
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


def deliver_all(parts: GateParts, uplink: Any, attempts_max: int = 20) -> int:
    """Deliver the outbox to the server (evidence first); how many events were acknowledged."""
    from edge_agent.delivery import deliver_once

    total = 0
    for _ in range(attempts_max):
        if parts.outbox.depth() == 0:
            break
        total += deliver_once(parts.config, parts.outbox, uplink)
    return total


def server_events(application: FastAPI, device_id: str) -> list[dict[str, Any]]:
    """The events the server stored for a device, oldest first (read from its database)."""
    from sqlalchemy import select

    from server.tables import Event

    with application.state.sessions() as session:
        rows = session.scalars(
            select(Event).where(Event.device_id == device_id).order_by(Event.seq)
        ).all()
        return [
            {"event_id": r.event_id, "seq": r.seq, "kind": r.kind, "reason": r.reason,
             "flagged": r.flagged, "body": r.body}
            for r in rows
        ]


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
    from models.store import default_model_dir
    from server.settings import ServerSettings

    default = build_default_pack(model_dir or default_model_dir())
    base_engine = FaceEngine(default)
    pack = demo_pack(default, work / "packs", base_engine.contract_id)
    engine = FaceEngine(pack)
    echo(f"pack {engine.manifest.name} {engine.manifest.version}; threshold {DEMO_THRESHOLD} "
         "is a demo placeholder, not a calibration")
    settings = ServerSettings(data_dir=work / "server", model_dir=pack.parent)
    photos = shipped_faces()
    scenes = {name: cab_scene(engine, photo) for name, photo in photos.items()}
    today = datetime.now(UTC).date()
    with serve(settings, face_engine=engine, port=port) as server:
        echo(f"server on SQLite in {settings.data_dir} at {server.url}")
        admin = Admin(server.url, server.admin_password)
        keys = register_demo(admin)
        # The station's registry (station, scales, cylinders, fillers) is the station
        # simulator's own seed, so that its scripted shift meets what it expects.
        seeded = seed_station(admin.http, {}, SITE, STATION_DEVICE)
        echo(f"registered site {SITE}, forklift {FORKLIFT}, filling station "
             f"{seeded.station_id} (device {STATION_DEVICE}, its scales, cylinders, fillers)")
        report = import_operators(admin, demo_people(today), photos)
        echo(f"imported {len(report.get('added', []))} certificate(s) with photos "
             "(astronaut: scikit-image; Grace Hopper: matplotlib; the cameraman has none)")
        config = parse_cab_config(
            cab_config(server.url, keys[FORKLIFT], pack, work / "cab")
        )
        parts = build_gate(config, engine=engine)
        uplink = Uplink(server.url, FORKLIFT, keys[FORKLIFT].key.encode("ascii"), 30.0)
        try:
            sync_once(parts.gate, uplink)
            gallery = parts.gate.cache.gallery
            echo(f"cab synced signed gallery v{gallery.version if gallery else '?'} "
                 f"({len(gallery.operators) if gallery else 0} operators)")
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
            server.url, station.device_id, station.key, work / "station",
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
        return run_demo(work, typer.echo, model_dir,
                        None if no_wait else _wait_for_ctrl_c, port)

    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        result = go(keep)
    else:
        with tempfile.TemporaryDirectory(prefix="jifang-demo-") as tmp:
            result = go(Path(tmp))
    wrong = [a for a in result.attempts if a.decision is None
             or a.decision.reason.value != a.expected]
    if wrong:
        typer.echo(f"{len(wrong)} decision(s) differ from what the demo expects", err=True)
        raise typer.Exit(code=1)
