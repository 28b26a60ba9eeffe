"""Local status endpoint: health, state, last decision, Prometheus metrics, simulated inputs.

Bound to 127.0.0.1 by default: the cab display and the maintenance laptop read it; the POST
routes stand in for the ignition/engine/claim inputs when no hardware inputs are wired.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from contract.codes import ClaimKind, GateState
from contract.messages import ClaimInfo
from edge_agent.cab.inputs import Inputs
from edge_agent.cab.types import Decision, GateFault

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSnapshot:
    """What the status endpoint reports, copied from the running agent at one instant."""

    device_id: str
    state: GateState
    enable: bool
    alarm: bool
    indication: str
    operator_id: str | None
    last_decision: Decision | None
    last_decision_at: datetime | None
    prompt: Mapping[str, str] | None
    """The liveness challenge prompt on the cab screen now (language -> text), if any."""
    camera_lost: bool
    model_fault: str | None
    passive_pad: str | None
    """The passive PAD component in use; None: classical cues, the challenge decides doubt."""
    gallery_version: int | None
    """Verified gallery version; None while there is none."""
    outbox_depth: int
    frames_captured: int
    frames_dropped: int
    camera_reconnects: int
    decisions: Mapping[str, int] = field(default_factory=dict)


class StatusSource(Protocol):
    """What the status endpoint needs from the agent: a snapshot and the simulated inputs."""

    @property
    def inputs(self) -> Inputs:
        """The start inputs the POST routes stand in for."""
        ...

    def snapshot(self) -> AgentSnapshot:
        """The agent's figures now."""
        ...

    def present_claim(self, kind: ClaimKind, value: str) -> ClaimInfo:
        """A claim from the QR scanner, the card reader or the keypad."""
        ...


class AgentCollector(Collector):
    """Reads the agent's counters at scrape time."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Current figures."""
        snap = self.source.snapshot()
        state = GaugeMetricFamily(
            "jifang_gate_state", "1 for the current gate state", labels=["state"]
        )
        for value in GateState:
            state.add_metric([value.value], 1.0 if snap.state == value else 0.0)
        yield state
        yield GaugeMetricFamily(
            "jifang_enable_output", "start-enable output closed", value=float(snap.enable)
        )
        yield GaugeMetricFamily(
            "jifang_alarm_output", "local alarm output on", value=float(snap.alarm)
        )
        decisions = CounterMetricFamily(
            "jifang_decisions", "decisions by reason", labels=["reason"]
        )
        for reason, count in sorted(snap.decisions.items()):
            decisions.add_metric([reason], float(count))
        yield decisions
        yield CounterMetricFamily(
            "jifang_frames_captured", "frames read", value=float(snap.frames_captured)
        )
        yield CounterMetricFamily(
            "jifang_frames_dropped",
            "frames dropped (queue full)",
            value=float(snap.frames_dropped),
        )
        yield CounterMetricFamily(
            "jifang_camera_reconnects",
            "camera reopen attempts",
            value=float(snap.camera_reconnects),
        )
        yield GaugeMetricFamily(
            "jifang_outbox_depth",
            "events not yet acknowledged",
            value=float(snap.outbox_depth),
        )
        yield GaugeMetricFamily(
            "jifang_gallery_version",
            "verified gallery version (0 = none)",
            value=float(snap.gallery_version or 0),
        )


def status_document(snap: AgentSnapshot) -> dict[str, Any]:
    """What GET /status returns."""
    last = snap.last_decision
    return {
        "device_id": snap.device_id,
        "state": snap.state.value,
        "enable": snap.enable,
        "alarm": snap.alarm,
        "indication": snap.indication,
        "prompt": dict(snap.prompt) if snap.prompt else None,
        "operator_id": snap.operator_id,
        "camera_lost": snap.camera_lost,
        "model_fault": snap.model_fault,
        "passive_pad": snap.passive_pad,
        "gallery_version": snap.gallery_version,
        "outbox_depth": snap.outbox_depth,
        "last_decision": None
        if last is None
        else {
            "reason": last.reason.value,
            "detail": last.detail,
            "operator_id": last.operator_id,
            "score": last.match.score if last.match else None,
            "claim": last.claim.model_dump(mode="json") if last.claim else None,
            "at": snap.last_decision_at.isoformat() if snap.last_decision_at else None,
        },
    }


class StatusServer(ThreadingHTTPServer):
    """The HTTP server; `source` is what it reports on."""

    daemon_threads = True

    def __init__(self, source: StatusSource, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.source = source
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(source))
        self.thread = threading.Thread(target=self.serve_forever, name="status-http", daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("status http: " + format, *args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, data: object) -> None:
        self._send(code, json.dumps(data, ensure_ascii=False).encode())

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            snap = self.server.source.snapshot()
            problems = [
                name
                for name, bad in (
                    ("model", snap.model_fault is not None),
                    ("camera", snap.camera_lost),
                    ("gallery", snap.gallery_version is None),
                )
                if bad
            ]
            self._json(
                503 if problems else 200,
                {
                    "healthy": not problems,
                    "problems": problems,
                    "state": snap.state.value,
                    "indication": snap.indication,
                },
            )
        elif path == "/status":
            self._json(200, status_document(self.server.source.snapshot()))
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), "text/plain; version=0.0.4")
        else:
            self._json(404, {"detail": "not found"})

    def do_POST(self) -> None:
        source = self.server.source
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/input/start":
            source.inputs.start_requested.set()
            self._json(202, {"accepted": True})
        elif parts.path == "/input/engine":
            source.inputs.engine_running = query.get("running", "0") == "1"
            self._json(202, {"engine_running": source.inputs.engine_running})
        elif parts.path == "/input/claim":
            try:
                info = source.present_claim(
                    ClaimKind(query.get("kind", "")), query.get("value", "")
                )
            except (ValueError, GateFault) as err:
                self._json(400, {"detail": str(err)})
                return
            self._json(202, info.model_dump(mode="json"))
        elif parts.path == "/input/override":
            source.inputs.override_code = query.get("code", "")
            self._json(202, {"accepted": True})
        else:
            self._json(404, {"detail": "not found"})
