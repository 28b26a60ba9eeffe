"""The assembled agent: capture from a folder, start via the local endpoint, status, metrics."""

from __future__ import annotations

from pathlib import Path

import cv2
import httpx
import pytest
from typer.testing import CliRunner

from contract.codes import EventKind
from tests.conftest import wait_until
from tests.edge_agent.conftest import base_config


def test_agent_runs_start_to_stop_through_local_endpoint(make_gate, frames, tmp_path: Path) -> None:
    from edge_agent.cab.agent import Agent

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames["astro"] * 3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    parts = make_gate(camera={"fps": 10.0, "lost_after_s": 5.0})
    agent = Agent(parts.config, parts, uplink=None)
    agent.start()
    try:
        assert agent.status_server is not None
        base = agent.status_server.url
        wait_until(lambda: agent.capture.captured > 0, timeout_s=60, what="a captured frame")
        health = httpx.get(f"{base}/health")
        assert health.status_code == 200, health.text
        assert health.json()["state"] == "locked" and health.json()["problems"] == []
        assert httpx.post(f"{base}/input/claim?kind=employee_no&value=E100").status_code == 202
        assert httpx.post(f"{base}/input/start").status_code == 202
        wait_until(
            lambda: httpx.get(f"{base}/status").json()["last_decision"] is not None,
            timeout_s=60,
            what="a decision",
        )
        status = httpx.get(f"{base}/status").json()
        assert status["passive_pad"] is None  # the test pack has no PAD model
        assert status["last_decision"]["reason"] == "AUTHORIZED", status
        assert status["last_decision"]["claim"] == {"kind": "employee_no", "value": "E100"}
        assert status["state"] == "authorized" and status["enable"] is True
        httpx.post(f"{base}/input/engine?running=1")
        wait_until(
            lambda: httpx.get(f"{base}/status").json()["state"] == "running",
            timeout_s=60,
            what="state running",
        )
        metrics = httpx.get(f"{base}/metrics").text
        assert 'jifang_decisions_total{reason="AUTHORIZED"} 1.0' in metrics
        assert 'jifang_gate_state{state="running"} 1.0' in metrics
        assert "jifang_frames_captured_total" in metrics
        httpx.post(f"{base}/input/engine?running=0")
        wait_until(
            lambda: httpx.get(f"{base}/status").json()["state"] == "locked",
            timeout_s=60,
            what="state locked",
        )
        assert parts.interlock.read()["enable"] is False
    finally:
        agent.stop()


def test_events_of_a_run_are_in_the_outbox(make_gate, frames) -> None:
    from edge_agent.cab.sources import ReplayFeed

    parts = make_gate()
    parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    parts.gate.engine_started()
    parts.gate.engine_stopped()
    events = [parts.outbox.parse(p) for p in parts.outbox.due(100)]
    assert [e.kind for e in events] == [EventKind.CAB_DECISION, EventKind.CAB_REVERIFY]
    assert [e.seq for e in events] == [0, 1]
    assert events[1].reason.value == "ENGINE_STOPPED"


def test_run_refuses_pack_without_the_named_calibration(
    default_pack: Path, tmp_path: Path, signer
) -> None:
    import yaml

    from jifang.cli import app

    data = base_config(
        tmp_path,
        signer.public_b64,
        models={
            "dir": str(default_pack.parent),
            "pack": default_pack.name,
            "calibration": "nowhere",
        },
    )
    path = tmp_path / "cab.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["edge", "run", "--config", str(path)])
    assert result.exit_code == 3
    assert "refusing to run" in result.output and "nowhere" in result.output


@pytest.mark.parametrize("kind", ["bogus"])
def test_claim_endpoint_rejects_unknown_kind(make_gate, kind: str) -> None:
    from edge_agent.cab.agent import Agent

    parts = make_gate()
    agent = Agent(parts.config, parts, uplink=None)
    agent.start()
    try:
        assert agent.status_server is not None
        response = httpx.post(f"{agent.status_server.url}/input/claim?kind={kind}&value=1")
        assert response.status_code == 400
    finally:
        agent.stop()


def test_presence_trigger_and_camera_fault_events(make_gate, frames, tmp_path: Path) -> None:
    from edge_agent.cab.agent import Agent

    folder = tmp_path / "frames"
    folder.mkdir()  # empty: the camera gives nothing yet
    parts = make_gate(
        gate={"start_trigger": "presence"},
        camera={"fps": 10.0, "lost_after_s": 0.5, "reconnect_max_s": 0.2},
    )
    agent = Agent(parts.config, parts, uplink=None)
    agent.start()
    try:

        def faults() -> list:
            events = [parts.outbox.parse(p) for p in parts.outbox.due(100)]
            return [e for e in events if e.kind == EventKind.DEVICE_FAULT]

        wait_until(lambda: len(faults()) >= 1, timeout_s=60, what="a camera fault event")
        assert faults()[0].reason.value == "CAMERA_LOST" and not faults()[0].payload.recovered
        assert agent.gate.status.indication == "camera lost: start refused"
        assert agent.status_server is not None
        health = httpx.get(f"{agent.status_server.url}/health")
        assert health.status_code == 503 and health.json()["problems"] == ["camera"]
        for i, image in enumerate(frames["astro"] * 3):
            cv2.imwrite(str(folder / f"{i:03d}.png"), image)
        # Presence of a face starts verification with no start input at all.
        wait_until(
            lambda: agent.gate.status.last_decision is not None, timeout_s=60, what="a decision"
        )
        assert agent.gate.status.last_decision.reason.value == "AUTHORIZED"
        assert any(f.payload.recovered for f in faults())
    finally:
        agent.stop()


def test_stale_claim_is_discarded_and_a_claim_is_used_once(make_gate) -> None:
    from contract.codes import ClaimKind
    from edge_agent.cab.agent import Agent

    parts = make_gate(claims={"claim_valid_s": 5.0})
    agent = Agent(parts.config, parts, uplink=None)
    valid_s = parts.config.claims.claim_valid_s
    agent.present_claim(ClaimKind.IC_CARD, " CARD-100 ")
    claim = agent.inputs.take_claim(valid_s)
    assert claim is not None and claim.value == "CARD-100"
    assert agent.inputs.take_claim(valid_s) is None  # used once
    agent.present_claim(ClaimKind.EMPLOYEE_NO, "E100")
    agent.inputs.claim_at -= 6.0  # presented longer ago than claims.claim_valid_s
    assert agent.inputs.take_claim(valid_s) is None
