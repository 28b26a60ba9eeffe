"""Station against the real server on loopback: synced registry in, events and review queue out.

rendered frames -> zones -> rules -> SQLite outbox -> HMAC uplink -> uvicorn + database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from contract.codes import ReasonCode
from edge_agent.station.agent import make_uplink
from edge_agent.station.sim import registry as reg
from edge_agent.station.sim.connected import ConnectedRun, play_against_server, sim_agent_config
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
from edge_agent.station.sim.seed import seed_station
from tests.conftest import wait_until
from tests.server.conftest import World, app, settings, world  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from playwright.sync_api import Browser

LAYOUT = make_layout(cameras=1, zones_per_camera=4)
S1, S2, S3, S4 = (c.scale_id for c in LAYOUT.cells)
DEVICE = "station-01"


@dataclass
class Station:
    """A registered, seeded filling-station device on the live server."""

    world: World
    key: str
    public_key: str
    fillers: dict[str, str]
    tmp: Path

    def config(self, **overrides: Any):  # noqa: ANN201 - AgentConfig
        station = station_config(LAYOUT, reg.STATION_ID, **overrides).model_dump(mode="json")
        station["registry_path"] = str(self.tmp / "registry.json")
        return sim_agent_config(
            self.world.base, DEVICE, self.key, self.public_key, self.tmp / "store", station
        )

    def play(self, actions: list[Action], duration: float = 40.0, **overrides: Any) -> ConnectedRun:
        config = self.config(**overrides)
        uplink = make_uplink(config)
        try:
            return play_against_server(
                config, LAYOUT, Scenario("t", duration, tuple(actions)), uplink
            )
        finally:
            uplink.close()

    def stored(self) -> list[dict[str, Any]]:
        """Every event the server stored for the device (flagged or not), oldest first."""
        from sqlalchemy import select

        from server.tables import Event

        with self.world.app.state.sessions() as session:
            rows = session.scalars(
                select(Event).where(Event.device_id == DEVICE).order_by(Event.seq)
            ).all()
            return [
                {
                    "kind": r.kind,
                    "reason": r.reason,
                    "severity": r.severity,
                    "flagged": r.flagged,
                    "review_status": r.review_status,
                    "seq": r.seq,
                    "body": r.body,
                }
                for r in rows
            ]

    def queue(self) -> list[dict[str, Any]]:
        """The review queue for the device, as a supervisor sees it."""
        answer = self.world.call("supervisor", "GET", f"/api/v1/review/events?device={DEVICE}")
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows


@pytest.fixture
def station(world: World, tmp_path: Path) -> Iterator[Station]:  # noqa: F811 - fixture
    made = world.call(
        "admin",
        "POST",
        "/api/v1/devices",
        json={"device_id": DEVICE, "kind": "filling_station", "site_id": "site-1"},
    )
    assert made.status_code == 201, made.text
    seeded = seed_station(world.http, world.as_role("admin"), "site-1", DEVICE)
    yield Station(
        world,
        made.json()["device_key"],
        made.json()["server_public_key"],
        seeded.operator_ids,
        tmp_path,
    )


def normal_fill(
    t: float, scale: str, code: str, filler: str, *, label: str | None = None, net: float = 14.0
) -> list[Action]:
    return [
        Person(t, scale, True),
        Login(t, scale, filler),
        Place(t + 1, scale, label or code),
        Scan(t + 2, scale, code),
        OpenValve(t + 3, scale, net),
        Remove(t + 26, scale),
        Person(t + 27, scale, False),
    ]


def violations(stored: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in stored if e["kind"] == "station.violation"]


def assert_flagged_in_queue(station: Station, reason: ReasonCode) -> dict[str, Any]:
    """The violation reached the review queue, open, with the server's severity, as the only
    item: a fill that broke the rule is part of the same incident, not a second item."""
    queue = station.queue()
    assert [(e["kind"], e["reason"]) for e in queue] == [("station.violation", reason.value)]
    entry = queue[0]
    assert entry["review_status"] == "open"
    assert entry["severity"] in ("high", "critical", "medium")
    return entry


def assert_fill_on_item(station: Station, entry: dict[str, Any]) -> dict[str, Any]:
    """The fill named its violation, and the review item carries the fill."""
    fills = [e for e in station.stored() if e["kind"] == "station.fill"]
    assert len(fills) == 1
    fill = fills[0]["body"]
    assert fill["payload"]["violation_ids"] == [entry["event_id"]]
    assert entry["covers"] == [fill["event_id"]]
    assert entry["fill"]["event_id"] == fill["event_id"]
    assert entry["fill"]["body"]["payload"] == fill["payload"]
    payload: dict[str, Any] = fill["payload"]
    return payload


def test_clean_shift_delivers_fills_and_queues_nothing(station: Station) -> None:
    f = station.fillers[reg.FILLER]
    actions = (
        normal_fill(0, S1, reg.GOOD[0], f)
        + normal_fill(2, S2, reg.GOOD[1], f)
        + normal_fill(30, S1, reg.GOOD[2], f)
        + normal_fill(32, S4, reg.GOOD[3], f)
    )
    run = station.play(actions, duration=65.0)
    assert run.sync_error is None and run.undelivered == 0
    stored = station.stored()
    assert [e["reason"] for e in stored] == ["FILL_OK"] * 4
    assert all(e["kind"] == "station.fill" and not e["flagged"] for e in stored)
    assert all(e["review_status"] == "none" and e["severity"] == "info" for e in stored)
    # The outbox numbered them 0..3: no gap on the server.
    assert [e["seq"] for e in stored] == [0, 1, 2, 3]
    assert {e["body"]["payload"]["filler_operator_id"] for e in stored} == {f}
    assert station.queue() == []
    assert run.result.report.fills_ok == 4


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (reg.UNREGISTERED, ReasonCode.UNREGISTERED_CYLINDER),
        (reg.FOREIGN, ReasonCode.FOREIGN_CYLINDER),
        (reg.OVERDUE, ReasonCode.INSPECTION_OVERDUE),
        (reg.SCRAPPED, ReasonCode.CYLINDER_SCRAPPED),
        (reg.TOO_OLD, ReasonCode.BEYOND_DESIGN_LIFE),
    ],
)
def test_prefill_refusal_reaches_review_queue(
    station: Station, code: str, reason: ReasonCode
) -> None:
    f = station.fillers[reg.FILLER]
    run = station.play(normal_fill(0, S1, code, f) + normal_fill(0, S2, reg.GOOD[5], f))
    stored = station.stored()
    assert violations(stored) == [reason.value]
    assert [e["reason"] for e in stored if e["kind"] == "station.fill"] == ["FILL_OK"]
    assert not any(s == S1 and on for s, on in run.result.station.scales.enable_writes)
    assert_flagged_in_queue(station, reason)


@pytest.mark.parametrize("role", [reg.FILLER_EXPIRED, reg.FILLER_WRONG_CATEGORY])
def test_uncertified_filler_from_server_certificates(station: Station, role: str) -> None:
    station.play(normal_fill(0, S1, reg.GOOD[0], station.fillers[role]))
    assert violations(station.stored()) == ["UNCERTIFIED_FILLER"]
    assert_flagged_in_queue(station, ReasonCode.UNCERTIFIED_FILLER)


def test_revoked_certificate_on_server_refuses_filler(station: Station) -> None:
    revoked = station.world.call(
        "cert_office", "POST", "/api/v1/certificates/TP3700000001/revoke", json={"reason": "test"}
    )
    assert revoked.status_code in (200, 204), revoked.text
    station.play(normal_fill(0, S1, reg.GOOD[0], station.fillers[reg.FILLER]))
    assert violations(station.stored()) == ["UNCERTIFIED_FILLER"]


def test_unscanned_fill(station: Station) -> None:
    actions: list[Action] = [
        Person(0, S1, True),
        Place(1, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, bypass=True),
        Remove(26, S1),
    ]
    station.play(actions)
    stored = station.stored()
    assert violations(stored) == ["UNSCANNED_FILL"]
    # The fill itself is flagged too (its reason is the violation, not FILL_OK), but it is
    # the same incident: one review item, the violation, carrying the fill.
    fills = [e for e in stored if e["kind"] == "station.fill"]
    assert [(e["reason"], e["flagged"]) for e in fills] == [("UNSCANNED_FILL", True)]
    entry = assert_flagged_in_queue(station, ReasonCode.UNSCANNED_FILL)
    assert entry["severity"] == "critical"
    fill = assert_fill_on_item(station, entry)
    assert fill["scanned_code"] is None and fill["net_kg"] > 13.0


def test_duplicate_fill(station: Station) -> None:
    f = station.fillers[reg.FILLER]
    station.play(
        normal_fill(0, S1, reg.GOOD[0], f) + normal_fill(30, S1, reg.GOOD[0], f), duration=65.0
    )
    assert violations(station.stored()) == ["DUPLICATE_FILL"]
    assert_flagged_in_queue(station, ReasonCode.DUPLICATE_FILL)


def test_swapped_code(station: Station) -> None:
    f = station.fillers[reg.FILLER]
    station.play(normal_fill(0, S1, reg.GOOD[0], f, label=reg.GOOD[7]))
    stored = station.stored()
    assert violations(stored) == ["SWAPPED_CODE"]
    body = next(e for e in stored if e["kind"] == "station.violation")["body"]["payload"]
    assert (body["scanned_code"], body["camera_code"]) == (reg.GOOD[0], reg.GOOD[7])
    assert_flagged_in_queue(station, ReasonCode.SWAPPED_CODE)


def test_overfill(station: Station) -> None:
    station.play(normal_fill(0, S1, reg.GOOD[0], station.fillers[reg.FILLER], net=16.0))
    stored = station.stored()
    assert violations(stored) == ["OVERFILL"]
    assert next(e for e in stored if e["kind"] == "station.violation")["severity"] == "critical"
    entry = assert_flagged_in_queue(station, ReasonCode.OVERFILL)
    fill = assert_fill_on_item(station, entry)
    assert fill["cylinder_code"] == reg.GOOD[0] and fill["net_kg"] > fill["rated_fill_kg"]


def test_filler_absent(station: Station) -> None:
    actions = [
        a
        for a in normal_fill(0, S1, reg.GOOD[0], station.fillers[reg.FILLER])
        if not (isinstance(a, Person) and not a.present)
    ]
    actions.append(Person(4, S1, False))
    station.play(actions, rules={"filler_absent_s": 5.0})
    assert violations(station.stored()) == ["FILLER_ABSENT"]
    entry = assert_flagged_in_queue(station, ReasonCode.FILLER_ABSENT)
    assert assert_fill_on_item(station, entry)["cylinder_code"] == reg.GOOD[0]


def test_registry_not_verified_refuses_every_scan(station: Station) -> None:
    # A wrong server key: the signed registry does not verify, so nothing is installed.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from contract.auth import public_key_b64

    station.public_key = public_key_b64(Ed25519PrivateKey.generate().public_key())
    f = station.fillers[reg.FILLER]
    run = station.play(normal_fill(0, S1, reg.FOREIGN, f) + normal_fill(0, S2, reg.GOOD[0], f))
    assert run.sync_error is not None and "signature" in run.sync_error
    assert run.result.report.scans_refused_stale_registry == 2
    assert not any(on for _, on in run.result.station.scales.enable_writes)
    # Refused for the registry, not judged: nothing was sent as a violation or a fill.
    assert station.stored() == []


def test_run_station_demo_against_server(station: Station) -> None:
    from edge_agent.station.sim.demo import run_station_demo

    lines = run_station_demo(
        station.world.base,
        DEVICE,
        station.key,
        station.tmp / "demo",
        server_public_key=station.public_key,
    )
    text = "\n".join(lines)
    assert "registry synced from the server" in text
    for reason in ("FOREIGN_CYLINDER", "UNSCANNED_FILL", "OVERFILL", "SWAPPED_CODE"):
        assert f"violation {reason}: 1" in text
    assert "still queued" not in text
    # One review item per incident: the fills that broke a rule ride on their violations.
    queued = sorted((e["kind"], e["reason"]) for e in station.queue())
    assert queued == sorted(
        ("station.violation", r)
        for r in ("FOREIGN_CYLINDER", "UNSCANNED_FILL", "OVERFILL", "SWAPPED_CODE")
    )
    flagged_fills = [e for e in station.stored() if e["kind"] == "station.fill" and e["flagged"]]
    assert flagged_fills  # the unscanned and the overfilled fill: covered by their items
    covered = {c for e in station.queue() for c in e["covers"]}
    assert covered == {e["body"]["event_id"] for e in flagged_fills}
    # The clean fills arrived as informational events, outside the review queue.
    ok = [e for e in station.stored() if e["reason"] == "FILL_OK"]
    assert ok and not any(e["flagged"] for e in ok)
    assert (station.tmp / "demo" / "report.json").exists()


def test_run_station_demo_without_server_key_refuses_scans(
    station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_agent.station.sim.demo import run_station_demo

    monkeypatch.delenv("JIFANG_SERVER_PUBLIC_KEY", raising=False)
    lines = run_station_demo(station.world.base, DEVICE, station.key, station.tmp / "demo")
    text = "\n".join(lines)
    assert "registry NOT synced" in text and "every scan is refused" in text
    assert "scans refused (registry stale)" in text
    # Only the bypassed fill (no scan needed to open a valve by hand) is still caught.
    assert {e["reason"] for e in station.queue()} == {"UNSCANNED_FILL"}


def test_station_registry_endpoint_refuses_cab_and_signs_for_station(station: Station) -> None:
    from contract.auth import load_public_key_b64, verify_envelope
    from contract.messages import SignedEnvelope, StationRegistry

    live = station.world
    assert live.crane.request("GET", "/api/v1/devices/crane-01/station-registry").status_code == 409
    from tests.server.helpers import DeviceClient

    client = DeviceClient(live.http, DEVICE, station.key)
    answer = client.request("GET", f"/api/v1/devices/{DEVICE}/station-registry")
    assert answer.status_code == 200, answer.text
    envelope = SignedEnvelope.model_validate_json(answer.content)
    message = StationRegistry.model_validate_json(
        verify_envelope(load_public_key_b64(station.public_key), envelope)
    )
    assert message.station_id == reg.STATION_ID and message.device_id == DEVICE
    owners = {c.code: c.owner_station_id for c in message.cylinders}
    assert owners[reg.FOREIGN] != reg.STATION_ID and owners[reg.GOOD[0]] == reg.STATION_ID
    assert {f.operator_id for f in message.fillers} == set(station.fillers.values())
    # Another device may not read this station's registry.
    assert client.request("GET", "/api/v1/devices/crane-01/station-registry").status_code == 403


def test_edge_run_station_yaml_against_server(station: Station, tmp_path: Path) -> None:
    """`jifang edge run --config station.yaml` as a process: Modbus scale, TCP scanner, server."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys

    import yaml

    from edge_agent.station.sim.modbus_server import SimModbusScaleServer
    from edge_agent.station.sim.station import SimScaleBank

    bank = SimScaleBank(["S101"])
    modbus = SimModbusScaleServer(bank, {1: "S101"}).start()
    listener = socket.create_server(("127.0.0.1", 0))
    store = tmp_path / "agent"
    data = {
        "device": {"id": DEVICE, "kind": "filling_station", "site_id": "site-1"},
        "server": {
            "url": station.world.base,
            "device_key": "${JIFANG_DEVICE_KEY}",
            "public_key": station.public_key,
            "sync_interval_s": 30,
            "heartbeat_interval_s": 5,
        },
        "store": {"dir": str(store), "retry_initial_s": 0.2},
        "station": {
            "station_id": reg.STATION_ID,
            "scales": [
                {"id": "S101", "driver": {"kind": "modbus", "port": modbus.port, "unit_id": 1}}
            ],
            "scanners": [
                {
                    "scale_id": "S101",
                    "kind": "tcp",
                    "address": f"127.0.0.1:{listener.getsockname()[1]}",
                }
            ],
            "registry_path": str(store / "station_registry.json"),
            "status_interval_s": 0.5,
        },
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo), "JIFANG_DEVICE_KEY": station.key}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jifang.cli import main; main()",
            "edge",
            "run",
            "-c",
            str(path),
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    status_file = store / "station_status.json"

    def status() -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return {}
        return doc

    try:
        listener.settimeout(30)
        scanner, _ = listener.accept()
        wait_until(
            lambda: status().get("registry_state") == "ok", timeout_s=60, what="a verified registry"
        )
        assert status()["indication"] == "ready"

        def heartbeat_state() -> str | None:
            from server.tables import Device

            with station.world.app.state.sessions() as session:
                device = session.get(Device, DEVICE)
                return device.state if device is not None else None

        wait_until(
            lambda: heartbeat_state() == "ready", timeout_s=60, what="the station's heartbeat"
        )
        scanner.sendall(f"OP:{station.fillers[reg.FILLER]}\n{reg.FOREIGN}\n".encode())
        wait_until(
            lambda: [e["reason"] for e in station.queue()] == ["FOREIGN_CYLINDER"],
            timeout_s=60,
            what="the foreign cylinder in the review queue",
        )
        assert not any(w.value for w in modbus.writes)
        scanner.sendall(f"{reg.GOOD[0]}\n".encode())
        wait_until(
            lambda: any(w.value for w in modbus.writes),
            timeout_s=60,
            what="fill-enable on for a good cylinder",
        )
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=30)
        assert agent.returncode == 0, output
        # Shutdown drove the interlock off again.
        assert [w.value for w in modbus.writes][-1] is False
        assert status()["scans_accepted"] == 1 and status()["scans_rejected"] == 1
        scanner.close()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        listener.close()
        modbus.stop()


@pytest.mark.browser
def test_violation_evidence_reaches_the_server_and_the_page_draws_its_zone(
    station: Station,
    chromium: Browser,
    output_dir: Path,
) -> None:
    """Agent frame -> outbox -> HTTP upload -> server store -> review page in Chromium."""
    import hashlib

    from contract.ids import uuid7
    from contract.messages import EvidenceDetection, EvidenceRef, StationViolationEvent
    from server.bundle import evidence_path
    from server.tables import Evidence
    from tests.server.conftest import PASSWORD
    from tests.server.helpers import DeviceClient, batch_of

    actions: list[Action] = [
        Person(0, S1, True),
        Place(1, S1, reg.GOOD[0]),
        OpenValve(3, S1, 14.0, bypass=True),
        Remove(26, S1),
    ]
    run = station.play(actions)
    assert run.undelivered == 0
    stored = station.stored()
    flagged = [e for e in stored if e["flagged"]]
    assert {(e["kind"], e["reason"]) for e in flagged} == {
        ("station.violation", "UNSCANNED_FILL"),
        ("station.fill", "UNSCANNED_FILL"),
    }
    server_settings = station.world.app.state.settings
    for event in flagged:
        (ref,) = event["body"]["evidence"]
        assert (ref["role"], ref["camera_id"]) == ("zone", "cam1")
        assert [z["zone_id"] for z in ref["zones"]] == [f"Z-{S1}"]
        with station.world.app.state.sessions() as session:
            assert session.get(Evidence, ref["sha256"]) is not None, "evidence not uploaded"
        data = evidence_path(server_settings.evidence_dir, ref["sha256"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref["sha256"] and data[:2] == b"\xff\xd8"
    violation = next(e for e in flagged if e["kind"] == "station.violation")
    ref = violation["body"]["evidence"][0]
    zone = ref["zones"][0]

    # A detector box over the same frame (the simulator runs without a detector).
    detected = EvidenceRef.model_validate(ref).model_copy(
        update={
            "detections": (EvidenceDetection(label="cylinder", box=(500.0, 60.0, 600.0, 330.0)),)
        }
    )
    body = StationViolationEvent.model_validate(violation["body"])
    boxed = body.model_copy(update={"event_id": uuid7(), "seq": 100, "evidence": (detected,)})
    posted = DeviceClient(station.world.http, DEVICE, station.key).post_batch(
        batch_of(DEVICE, [boxed])
    )
    assert posted.status_code == 200, posted.text

    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        base = station.world.base
        page.goto(base + "/login")
        page.fill("input[name=username]", "supervisor")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        page.goto(base + f"/review/{body.event_id}")
        assert "该事件没有证据图像" not in page.inner_text("section.evidence")
        # The violation's frame first, then the frame of the fill folded into its item.
        figures = page.locator("section.evidence figure.evidence-figure")
        fill = next(e for e in flagged if e["kind"] == "station.fill")
        assert [
            figures.nth(i).locator("img").get_attribute("src") for i in range(figures.count())
        ] == [f"/review/evidence/{e['body']['evidence'][0]['sha256']}" for e in (violation, fill)]
        first = figures.first
        page.wait_for_function("document.querySelector('img.evidence-img').complete")
        natural = page.evaluate(
            "() => { const i = document.querySelector('img.evidence-img');"
            " return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert natural == [LAYOUT.width, LAYOUT.height]
        # The overlay lies exactly on the image, in the image's own pixels...
        shown = first.locator("img.evidence-img").bounding_box()
        overlay = first.locator("svg.overlay").bounding_box()
        assert shown is not None and overlay is not None
        assert all(abs(shown[k] - overlay[k]) < 1 for k in ("x", "y", "width", "height"))
        view = first.locator("svg.overlay").get_attribute("viewBox")
        assert view == f"0 0 {LAYOUT.width} {LAYOUT.height}"
        # ...and the zone polygon sits where the agent's config put it (getBBox: the geometry,
        # not Chromium's miter-inflated stroke box of a polygon).
        geometry = page.evaluate(
            f"() => {{ const b = document.querySelector(\"polygon.zone[data-zone='Z-{S1}']\")"
            ".getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; }"
        )
        xs = [p[0] for p in zone["polygon"]]
        ys = [p[1] for p in zone["polygon"]]
        assert geometry == [min(xs), min(ys), max(xs), max(ys)]
        scale = shown["width"] / LAYOUT.width
        assert first.locator("svg.overlay polygon.operator-area").count() == 1
        caption = first.locator("figcaption").inner_text()
        assert f"区域 Z-{S1}" in caption and "摄像头 cam1" in caption and "拍摄于" in caption
        page.screenshot(path=str(output_dir / "review-station-evidence.png"), full_page=True)

        page.goto(base + f"/review/{boxed.event_id}")
        page.wait_for_function("document.querySelector('img.evidence-img').complete")
        shown = page.locator("img.evidence-img").bounding_box()
        box = page.locator("svg.overlay rect.det-cylinder").bounding_box()
        assert shown is not None and box is not None
        assert abs(box["x"] - (shown["x"] + 500 * scale)) < 4
        assert abs(box["width"] - 100 * scale) < 4
        assert "检测到的气瓶" in page.inner_text("section.evidence figcaption")
        assert errors == []
    finally:
        context.close()
