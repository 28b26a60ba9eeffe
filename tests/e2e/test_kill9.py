"""kill -9 of the cab agent in the middle of delivery: restarted, it replays; the server keeps one copy.

A forwarding proxy sits between agent and server. It passes the first event batch on to
the server (which stores it) and then holds the answer back, so the agent is killed with
that batch delivered but not acknowledged: the worst moment for exactly-once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import httpx
import pytest
import yaml

from edge_agent.cab.simclip import live_clip
from jifang.demo_kit import FORKLIFT, cab_config, server_events
from tests.conftest import wait_until
from tests.e2e.conftest import CabWorld

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 90.0


class HoldingProxy(ThreadingHTTPServer):
    """Forwards to the server; with `hold` set, the first event batch's answer is withheld."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = httpx.Client(base_url=upstream, timeout=60)
        self.hold = threading.Event()
        self.release = threading.Event()
        self.in_flight = threading.Event()
        self.held_ids: list[str] = []
        self.acks: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    server: HoldingProxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower().startswith("x-jifang")}
        if self.headers.get("Content-Type"):
            headers["Content-Type"] = self.headers["Content-Type"]
        answer = self.server.upstream.request(
            self.command, self.path, content=body, headers=headers
        )
        is_batch = self.command == "POST" and self.path.startswith("/api/v1/events")
        if is_batch and answer.status_code == 200:
            self.server.acks.append(answer.json())
        if is_batch and self.server.hold.is_set() and not self.server.in_flight.is_set():
            self.server.held_ids = [e["event_id"] for e in json.loads(body)["events"]]
            self.server.in_flight.set()
            self.server.release.wait(timeout=WAIT_S)  # the agent dies meanwhile
        self.send_response(answer.status_code)
        for name in ("Content-Type", "Date"):
            if answer.headers.get(name):
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the agent was killed: nobody reads this answer
            self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = _forward


@pytest.fixture
def proxy(cab_world: CabWorld) -> Iterator[HoldingProxy]:
    server = HoldingProxy(cab_world.server.url)
    thread = threading.Thread(target=server.serve_forever, name="holding-proxy", daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.upstream.close()


def _start_agent(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    start = log.stat().st_size if log.exists() else 0
    handle = log.open("a")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jifang.cli import main; main()",
            "edge",
            "run",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        # Only what this process appended to the log counts.
        text = log.read_bytes()[start:].decode(errors="replace")
        found = re.search(r"status at (http://\S+)", text)
        if found and agent.poll() is None:
            return agent, found.group(1)
        if agent.poll() is not None:
            break
        time.sleep(0.2)
    agent.kill()
    raise AssertionError(f"agent did not start:\n{log.read_text(errors='replace')[-4000:]}")


def _wait(url: str, ready, what: str) -> dict:  # noqa: ANN001 - predicate on the status document
    """The agent's /status document once `ready(status)` holds (the last one seen on timeout)."""
    last: dict = {}

    def poll() -> dict | None:
        nonlocal last
        last = httpx.get(f"{url}/status", timeout=10).json()
        return last if ready(last) else None

    try:
        return wait_until(poll, timeout_s=WAIT_S, what=what, every_s=0.2)
    except AssertionError as err:
        raise AssertionError(f"{err}: {last}") from None


def _decide(url: str, previous_at: str | None) -> dict:
    assert httpx.post(f"{url}/input/start", timeout=10).status_code == 202
    status = _wait(
        url,
        lambda s: (
            s["last_decision"]
            and s["last_decision"]["at"] != previous_at
            and s["state"] != "verifying"
        ),
        "a decision",
    )
    if status["state"] == "authorized":
        httpx.post(f"{url}/input/engine?running=1", timeout=10)
        _wait(url, lambda s: s["state"] == "running", "running")
        httpx.post(f"{url}/input/engine?running=0", timeout=10)
        status = _wait(url, lambda s: s["state"] == "locked", "locked")
    return status


def _outbox(store: Path) -> dict[str, float | None]:
    with sqlite3.connect(store / "outbox.sqlite") as db:
        return dict(db.execute("SELECT event_id, delivered FROM events"))


@pytest.mark.slow
def test_kill9_mid_delivery_then_restart_stores_each_event_once(
    cab_world: CabWorld,
    proxy: HoldingProxy,
    engine,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    world = cab_world
    store = tmp_path / "cab"
    camera = store / "camera"
    camera.mkdir(parents=True)
    scene = world.scenes["astronaut"]
    box = engine.detect(scene)[0].detection.box
    for i, frame in enumerate(live_clip(scene, box, 30)):
        cv2.imwrite(str(camera / f"{i:03d}.png"), frame)
    data = cab_config(
        proxy.url,
        world.forklift,
        world.pack,
        store,
        # A recorded clip cannot answer a challenge: temporal liveness only for this test.
        liveness={"require_passive": False, "active": "never"},
        server={"timeout_s": 120.0, "sync_interval_s": 5.0},
        camera={"lost_after_s": 5.0},
        store={"retry_initial_s": 0.2},
    )
    config = tmp_path / "cab.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    log = tmp_path / "agent.log"

    proxy.hold.set()
    agent, url = _start_agent(config, log)
    try:
        _wait(url, lambda s: s["gallery_version"] is not None, "the gallery sync")
        at = None
        reasons = []
        for _ in range(3):
            status = _decide(url, at)
            at = status["last_decision"]["at"]
            reasons.append(status["last_decision"]["reason"])
        assert "AUTHORIZED" in reasons, reasons
        assert proxy.in_flight.wait(WAIT_S), "no event batch was sent"
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    proxy.hold.clear()
    proxy.release.set()

    held = set(proxy.held_ids)
    assert held
    on_server = {e["event_id"] for e in server_events(world.server.app, FORKLIFT)}
    assert held <= on_server  # the server stored the batch ...
    local = _outbox(store)
    assert all(local[i] is None for i in held)  # ... the agent never heard so
    assert len(local) > len(held)  # and more events waited behind it

    agent, url = _start_agent(config, log)
    try:
        _wait(url, lambda s: s["outbox_depth"] == 0, "the outbox to drain")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()

    local = _outbox(store)
    assert all(delivered is not None for delivered in local.values())
    stored = server_events(world.server.app, FORKLIFT)
    ids = [e["event_id"] for e in stored]
    assert len(ids) == len(set(ids)) == len(local)
    assert set(ids) == set(local)
    replayed = {d for ack in proxy.acks for d in ack.get("duplicates", [])}
    assert held <= replayed  # the replayed batch was recognised, not stored again
    seqs = sorted(e["seq"] for e in stored)
    assert seqs == sorted(set(seqs))
