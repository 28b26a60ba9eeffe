"""Local status endpoint: health, state, last decision, Prometheus metrics, simulated inputs.

Bound to 127.0.0.1 by default: the cab display and the maintenance laptop read it; the POST
routes stand in for the ignition/engine/claim inputs when no hardware inputs are wired.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from contract.codes import ClaimKind, GateState
from edge_agent.cab.types import GateFault

if TYPE_CHECKING:
    from edge_agent.cab.agent import Agent

logger = logging.getLogger(__name__)


class AgentCollector(Collector):
    """Reads the agent's counters at scrape time."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Current figures."""
        agent = self.agent
        status = agent.gate.status
        state = GaugeMetricFamily(
            "jifang_gate_state", "1 for the current gate state", labels=["state"]
        )
        for value in GateState:
            state.add_metric([value.value], 1.0 if status.state == value else 0.0)
        yield state
        yield GaugeMetricFamily(
            "jifang_enable_output", "start-enable output closed", value=float(status.enable)
        )
        yield GaugeMetricFamily(
            "jifang_alarm_output", "local alarm output on", value=float(status.alarm)
        )
        decisions = CounterMetricFamily(
            "jifang_decisions", "decisions by reason", labels=["reason"]
        )
        for reason, count in sorted(agent.gate.decisions.items()):
            decisions.add_metric([reason], float(count))
        yield decisions
        yield CounterMetricFamily(
            "jifang_frames_captured", "frames read", value=float(agent.capture.captured)
        )
        yield CounterMetricFamily(
            "jifang_frames_dropped",
            "frames dropped (queue full)",
            value=float(agent.capture.dropped),
        )
        yield CounterMetricFamily(
            "jifang_camera_reconnects",
            "camera reopen attempts",
            value=float(agent.capture.reconnects),
        )
        yield GaugeMetricFamily(
            "jifang_outbox_depth",
            "events not yet acknowledged",
            value=float(agent.parts.outbox.depth()),
        )
        gallery = agent.gate.cache.gallery
        yield GaugeMetricFamily(
            "jifang_gallery_version",
            "verified gallery version (0 = none)",
            value=float(gallery.version if gallery else 0),
        )


def _prompt(agent: Agent) -> dict[str, str] | None:
    """The liveness challenge prompt on the cab screen now (language -> text), if any."""
    verifier = agent.gate.verifier
    if verifier is None:
        return None
    current = getattr(verifier.liveness.display, "current", None)
    return dict(current) if current else None


def status_document(agent: Agent) -> dict[str, Any]:
    """What GET /status returns."""
    status = agent.gate.status
    last = status.last_decision
    gallery = agent.gate.cache.gallery
    return {
        "device_id": agent.config.device.id,
        "state": status.state.value,
        "enable": status.enable,
        "alarm": status.alarm,
        "indication": status.indication,
        "prompt": _prompt(agent),
        "operator_id": status.operator_id,
        "camera_lost": agent.capture.lost(),
        "model_fault": agent.gate.model_fault.detail if agent.gate.model_fault else None,
        "gallery_version": gallery.version if gallery else None,
        "outbox_depth": agent.parts.outbox.depth(),
        "last_decision": None
        if last is None
        else {
            "reason": last.reason.value,
            "detail": last.detail,
            "operator_id": last.operator_id,
            "score": last.match.score if last.match else None,
            "claim": last.claim.model_dump(mode="json") if last.claim else None,
            "at": status.last_decision_at.isoformat() if status.last_decision_at else None,
        },
    }


class StatusServer(ThreadingHTTPServer):
    """The HTTP server; `agent` is what it reports on."""

    daemon_threads = True

    def __init__(self, agent: Agent, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.agent = agent
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(agent))
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
        agent = self.server.agent
        path = urlsplit(self.path).path
        if path == "/health":
            problems = [
                name
                for name, bad in (
                    ("model", agent.gate.model_fault is not None),
                    ("camera", agent.capture.lost()),
                    ("gallery", agent.gate.cache.gallery is None),
                )
                if bad
            ]
            self._json(
                503 if problems else 200,
                {
                    "healthy": not problems,
                    "problems": problems,
                    "state": agent.gate.status.state.value,
                    "indication": agent.gate.status.indication,
                },
            )
        elif path == "/status":
            self._json(200, status_document(agent))
        elif path == "/metrics":
            self._send(200, generate_latest(self.server.registry), "text/plain; version=0.0.4")
        else:
            self._json(404, {"detail": "not found"})

    def do_POST(self) -> None:
        agent = self.server.agent
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/input/start":
            agent.inputs.start_requested.set()
            self._json(202, {"accepted": True})
        elif parts.path == "/input/engine":
            agent.inputs.engine_running = query.get("running", "0") == "1"
            self._json(202, {"engine_running": agent.inputs.engine_running})
        elif parts.path == "/input/claim":
            try:
                info = agent.present_claim(ClaimKind(query.get("kind", "")), query.get("value", ""))
            except (ValueError, GateFault) as err:
                self._json(400, {"detail": str(err)})
                return
            self._json(202, info.model_dump(mode="json"))
        elif parts.path == "/input/override":
            agent.inputs.override_code = query.get("code", "")
            self._json(202, {"accepted": True})
        else:
            self._json(404, {"detail": "not found"})
