"""Outbox delivery semantics against a real HTTP receiver on loopback.

The receiver here is a recording stand-in for the server's /api/v1/events route (it checks
the HMAC like the protocol says and answers EventBatchAck); the exactly-once check against
the real server belongs to the integration with the server issue.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contract.auth import HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureError, verify_request_mac
from contract.codes import ReasonCode
from contract.ids import uuid7
from contract.messages import DeviceFaultEvent, DeviceFaultPayload, EventBatch, EventBatchAck
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
KEY = b"outbox-test-key"
DEVICE = "FL-0001"


class Receiver(ThreadingHTTPServer):
    """Records every event id it is sent; can hold requests open or refuse them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[str] = []
        self.bodies: dict[str, str] = {}
        self.first_request = threading.Event()
        self.release = threading.Event()
        self.hold_first = False
        self.fail_with: int | None = None
        self.bad_signatures = 0
        self.evidence: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        import hashlib

        body = self.rfile.read(int(self.headers["Content-Length"]))
        verify_request_mac(
            KEY,
            "PUT",
            self.path,
            self.headers[HEADER_TIMESTAMP],
            body,
            self.headers[HEADER_SIGNATURE],
        )
        sha = self.path.rsplit("/", 1)[-1]
        ok = (
            hashlib.sha256(body).hexdigest() == sha and self.headers["Content-Type"] == "image/jpeg"
        )
        if ok:
            self.server.evidence[sha] = body
        self.send_response(201 if ok else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            verify_request_mac(
                KEY,
                "POST",
                self.path,
                self.headers[HEADER_TIMESTAMP],
                body,
                self.headers[HEADER_SIGNATURE],
            )
        except SignatureError:
            self.server.bad_signatures += 1
            self.send_response(401)
            self.end_headers()
            return
        if self.server.fail_with is not None:
            self.send_response(self.server.fail_with)
            self.end_headers()
            return
        batch = EventBatch.model_validate_json(body)
        accepted, duplicates = [], []
        with self.server.lock:
            for event in batch.events:
                eid = str(event.event_id)
                (duplicates if eid in self.server.bodies else accepted).append(event.event_id)
                self.server.received.append(eid)
                self.server.bodies[eid] = event.model_dump_json()
            first = not self.server.first_request.is_set()
            self.server.first_request.set()
        if first and self.server.hold_first:
            # The device is killed while this request is in flight: no answer reaches it.
            self.server.release.wait(30)
        ack = EventBatchAck(accepted=tuple(accepted), duplicates=tuple(duplicates))
        data = ack.model_dump_json().encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


SENDER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from datetime import UTC, datetime
    from contract.codes import ReasonCode
    from contract.ids import uuid7
    from contract.messages import DeviceFaultEvent, DeviceFaultPayload
    from edge_agent.config import parse_config
    from edge_agent.delivery import run_delivery
    from edge_agent.outbox import Outbox
    from edge_agent.uplink import Uplink

    url, store, new = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    config = parse_config({
        "device": {"id": "FL-0001", "kind": "forklift", "site_id": "s"},
        "server": {"url": url, "device_key": "outbox-test-key", "batch_size": 5},
        "camera": {"source": 0},
        "store": {"dir": str(store), "retry_initial_s": 0.05, "retry_max_s": 1.0},
    })
    outbox = Outbox(store / "outbox.sqlite")
    for i in range(new):
        outbox.append(lambda seq: DeviceFaultEvent(
            event_id=uuid7(), device_id="FL-0001", seq=seq, occurred_at=datetime.now(UTC),
            reason=ReasonCode.CAMERA_LOST, payload=DeviceFaultPayload(component="camera", message=f"n{i}")))
    (store / "ready").write_text("1")
    run_delivery(config, threading.Event(), outbox, Uplink(url, "FL-0001", b"outbox-test-key", 30.0))
    """
)


def _sender(url: str, store: Path, new: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", SENDER, url, str(store), str(new)], env=env, cwd=REPO
    )


def _stored(store: Path) -> list[tuple[int, str, str, float | None]]:
    with sqlite3.connect(store / "outbox.sqlite") as db:
        return [
            tuple(r)
            for r in db.execute("SELECT seq, event_id, body, delivered FROM events ORDER BY seq")
        ]


def test_nothing_lost_when_sender_is_killed_mid_delivery(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.hold_first = True
    first = _sender(receiver.url, tmp_path, new=12)
    try:
        wait_until(
            lambda: receiver.first_request.is_set() or first.poll() is not None,
            timeout_s=60,
            what="the first request or the sender's exit",
        )
        assert receiver.first_request.is_set(), "sender died before delivering"
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        receiver.release.set()
        if first.poll() is None:
            first.kill()
    in_flight = list(receiver.received)
    assert len(in_flight) == 5  # batch_size; none acknowledged to the device
    stored = _stored(tmp_path)
    assert [row[0] for row in stored] == list(range(12))
    assert all(row[3] is None for row in stored)

    second = _sender(receiver.url, tmp_path, new=0)
    try:
        wait_until(
            lambda: all(row[3] is not None for row in _stored(tmp_path)),
            what="every event delivered",
        )
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    stored = _stored(tmp_path)
    assert set(receiver.bodies) == {row[1] for row in stored}  # every event arrived
    for _seq, event_id, body, _delivered in stored:
        assert json.loads(receiver.bodies[event_id]) == json.loads(body)  # unchanged
    # At least once: the batch in flight at the kill was sent again and acknowledged as duplicates.
    assert all(receiver.received.count(eid) == 2 for eid in in_flight)
    assert receiver.bad_signatures == 0


def test_failed_delivery_backs_off_and_keeps_events(receiver: Receiver, tmp_path: Path) -> None:
    from edge_agent.config import parse_config
    from edge_agent.delivery import deliver_once
    from edge_agent.outbox import Outbox
    from edge_agent.uplink import Uplink

    config = parse_config(
        {
            "device": {"id": DEVICE, "kind": "forklift", "site_id": "s"},
            "server": {"url": receiver.url, "device_key": KEY.decode()},
            "camera": {"source": 0},
            "store": {"dir": str(tmp_path), "retry_initial_s": 0.2, "retry_max_s": 1.0},
        }
    )
    outbox = Outbox(tmp_path / "outbox.sqlite")
    uplink = Uplink(receiver.url, DEVICE, KEY, 5.0)
    try:
        outbox.append(
            lambda seq: DeviceFaultEvent(
                event_id=uuid7(),
                device_id=DEVICE,
                seq=seq,
                occurred_at=datetime.now(UTC),
                reason=ReasonCode.CAMERA_LOST,
                payload=DeviceFaultPayload(component="camera", message="x"),
            )
        )
        receiver.fail_with = 503
        assert deliver_once(config, outbox, uplink) == 0
        assert outbox.depth() == 1
        assert outbox.due(10) == []  # backing off
        receiver.fail_with = None
        wait_until(lambda: outbox.due(10), timeout_s=5.0, what="the back-off to end")
        assert deliver_once(config, outbox, uplink) == 1
        assert outbox.depth() == 0
    finally:
        uplink.close()
        outbox.close()


def test_events_and_sequence_survive_reopen(tmp_path: Path) -> None:
    from edge_agent.outbox import Outbox

    def make(seq: int) -> DeviceFaultEvent:
        return DeviceFaultEvent(
            event_id=uuid7(),
            device_id=DEVICE,
            seq=seq,
            occurred_at=datetime.now(UTC),
            reason=ReasonCode.CAMERA_LOST,
            payload=DeviceFaultPayload(component="camera", message="x"),
        )

    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.append(make)
    outbox.append(make)
    outbox.mark_acked(EventBatchAck(accepted=(Outbox.parse(outbox.due(1)[0]).event_id,)))
    outbox.close()
    again = Outbox(tmp_path / "o.sqlite")
    try:
        assert again.depth() == 1
        assert again.append(make).seq == 2  # never reused
        assert again.purge_delivered(0.0) == 1
        assert again.append(make).seq == 3  # still not reused after purging
    finally:
        again.close()


def test_evidence_kept_until_acknowledged_then_removed(tmp_path: Path) -> None:
    from edge_agent.outbox import Outbox

    outbox = Outbox(tmp_path / "o.sqlite")
    try:
        sha = outbox.add_evidence(tmp_path / "ev", b"\xff\xd8fake-jpeg", "image/jpeg")
        path = tmp_path / "ev" / f"{sha}.jpg"
        assert outbox.prune_evidence(retention_s=3600, max_bytes=1 << 20) == 0
        assert path.exists()
        outbox.evidence_acked(sha)
        assert outbox.prune_evidence(retention_s=3600, max_bytes=1 << 20) == 1
        assert not path.exists()
        old = outbox.add_evidence(tmp_path / "ev", b"other", "image/jpeg")
        assert outbox.prune_evidence(retention_s=0.0, max_bytes=1 << 20) == 1  # past retention
        assert not (tmp_path / "ev" / f"{old}.jpg").exists()
    finally:
        outbox.close()


def test_evidence_is_uploaded_by_hash_then_released(receiver: Receiver, tmp_path: Path) -> None:
    from edge_agent.config import parse_config
    from edge_agent.delivery import deliver_once
    from edge_agent.outbox import Outbox
    from edge_agent.uplink import Uplink

    config = parse_config(
        {
            "device": {"id": DEVICE, "kind": "forklift", "site_id": "s"},
            "server": {"url": receiver.url, "device_key": KEY.decode()},
            "camera": {"source": 0},
            "store": {"dir": str(tmp_path)},
        }
    )
    outbox = Outbox(tmp_path / "outbox.sqlite")
    uplink = Uplink(receiver.url, DEVICE, KEY, 5.0)
    try:
        sha = outbox.add_evidence(tmp_path / "ev", b"\xff\xd8 face jpeg", "image/jpeg")
        deliver_once(config, outbox, uplink)
        assert receiver.evidence == {sha: b"\xff\xd8 face jpeg"}
        assert outbox.evidence_due(10) == []
        assert outbox.prune_evidence(retention_s=3600, max_bytes=1 << 20) == 1
    finally:
        uplink.close()
        outbox.close()
