"""The uplink's side of docs/protocol.md, checked by a small recording HTTP receiver.

The receiver verifies the HMAC exactly as the protocol defines it and serves envelopes the
test signed; it is not the jifang server (that integration comes with the server issue).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, verify_request_mac
from contract.codes import ReasonCode
from contract.messages import GalleryUpdateRequired, Heartbeat
from edge_agent.uplink import Uplink, UplinkError
from tests.edge_agent.conftest import DEVICE, DEVICE_KEY


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.seen: list[tuple[str, str]] = []
        self.date_offset = timedelta(0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        verify_request_mac(
            DEVICE_KEY.encode(),
            method,
            self.path,
            self.headers[HEADER_TIMESTAMP],
            body,
            self.headers[HEADER_SIGNATURE],
        )
        assert self.headers[HEADER_DEVICE] == DEVICE
        self.server.seen.append((method, self.path))
        code, data = self.server.routes.get(urlsplit(self.path).path, (404, b"{}"))
        self.send_response_only(code)  # send_response would add its own Date header
        self.send_header(
            "Date", format_datetime(datetime.now(UTC) + self.server.date_offset, usegmt=True)
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, name="recorder", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sync_installs_signed_config_and_gallery(recorder: Recorder, make_gate, signer) -> None:
    from edge_agent.cab.agent import sync_once

    parts = make_gate(snapshot=False, device_config=False)
    recorder.routes[f"/api/v1/devices/{DEVICE}/config"] = (
        200,
        signer.config().model_dump_json().encode(),
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/gallery"] = (
        200,
        signer.snapshot(version=7).model_dump_json().encode(),
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/heartbeat"] = (204, b"")
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    try:
        sync_once(parts.gate, uplink)
        uplink.heartbeat(
            Heartbeat(
                device_id=DEVICE, sent_at=datetime.now(UTC), agent_version="t", state="locked"
            )
        )
    finally:
        uplink.close()
    assert parts.cache.gallery is not None and parts.cache.gallery.version == 7
    gallery_request = [path for method, path in recorder.seen if "/gallery" in path][0]
    query = parse_qs(urlsplit(gallery_request).query)
    assert query == {"since": ["0"], "contract": [parts.cache.contract_id]}
    assert ("POST", f"/api/v1/devices/{DEVICE}/heartbeat") in recorder.seen


def test_contract_mismatch_answer_is_typed(recorder: Recorder, signer) -> None:
    refusal = GalleryUpdateRequired(
        device_id=DEVICE,
        server_contract=signer.contract,
        device_contract_id="x" * 16,
        detail="re-enroll",
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/gallery"] = (409, refusal.model_dump_json().encode())
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    try:
        assert isinstance(uplink.get_gallery(0, "x" * 16), GalleryUpdateRequired)
    finally:
        uplink.close()


def test_server_errors_become_uplink_errors(recorder: Recorder) -> None:
    recorder.routes[f"/api/v1/devices/{DEVICE}/config"] = (500, b"boom")
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    try:
        with pytest.raises(UplinkError, match="HTTP 500"):
            uplink.get_config()
    finally:
        uplink.close()
    dead = Uplink("http://127.0.0.1:9", DEVICE, DEVICE_KEY.encode(), 1.0)
    try:
        with pytest.raises(UplinkError):
            dead.get_config()
    finally:
        dead.close()


def test_server_clock_far_off_makes_clock_untrusted(
    recorder: Recorder, make_gate, signer, frames
) -> None:
    from edge_agent.cab.agent import sync_once
    from edge_agent.cab.sources import ReplayFeed

    parts = make_gate(snapshot=False, device_config=False)
    recorder.routes[f"/api/v1/devices/{DEVICE}/config"] = (
        200,
        signer.config().model_dump_json().encode(),
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/gallery"] = (
        200,
        signer.snapshot().model_dump_json().encode(),
    )
    recorder.date_offset = timedelta(hours=1)
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    try:
        sync_once(parts.gate, uplink)
    finally:
        uplink.close()
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.CLOCK_UNTRUSTED


def test_refused_request_still_reveals_a_wrong_local_clock(
    recorder: Recorder, make_gate, frames
) -> None:
    from edge_agent.cab.agent import sync_once
    from edge_agent.cab.sources import ReplayFeed

    parts = make_gate()
    recorder.routes[f"/api/v1/devices/{DEVICE}/config"] = (
        401,
        b'{"detail": "timestamp out of range"}',
    )
    recorder.date_offset = timedelta(hours=-3)
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    try:
        with pytest.raises(UplinkError, match="401"):
            sync_once(parts.gate, uplink)
    finally:
        uplink.close()
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.CLOCK_UNTRUSTED
    )


def test_refused_gallery_in_sync_loop_is_a_fault_event_and_keeps_the_verified_one(
    recorder: Recorder, make_gate, signer
) -> None:
    import time

    from contract.codes import EventKind
    from edge_agent.cab.agent import Agent

    good = signer.snapshot(version=9)
    forged = good.model_copy(
        update={"payload": good.payload.replace('"version":9', '"version":10')}
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/config"] = (
        200,
        signer.config().model_dump_json().encode(),
    )
    recorder.routes[f"/api/v1/devices/{DEVICE}/gallery"] = (200, forged.model_dump_json().encode())
    parts = make_gate(server={"url": recorder.url, "sync_interval_s": 5.0})
    uplink = Uplink(recorder.url, DEVICE, DEVICE_KEY.encode(), 5.0)
    agent = Agent(parts.config, parts, uplink)
    agent.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum("/gallery" in p for _m, p in recorder.seen) < 1:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        agent.stop()
    events = _stored_events(parts)
    faults = [
        e for e in events if e.kind == EventKind.DEVICE_FAULT and e.payload.component == "gallery"
    ]
    assert len(faults) == 1 and faults[0].reason == ReasonCode.GALLERY_INVALID
    assert (
        parts.cache.gallery is not None and parts.cache.gallery.version == 1
    )  # the verified one stays


def _stored_events(parts) -> list:
    """Every event in the outbox file (the agent has closed its own connection)."""
    import sqlite3

    from pydantic import TypeAdapter

    from contract.messages import Event

    with sqlite3.connect(parts.config.store.dir / "outbox.sqlite") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM events ORDER BY seq")]
    return [TypeAdapter(Event).validate_json(body) for body in bodies]
