"""`jifang demo --no-wait`: the four cab decisions with their reasons, and the server's copy."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from jifang.cli import app
from jifang.demo import run_demo
from jifang.demo_kit import FORKLIFT, server_events

EXPECTED = [
    ("certified forklift operator", "AUTHORIZED"),
    ("no certificate", "NO_MATCH"),
    ("expired overnight", "CERT_EXPIRED"),
    ("printed photo", "LIVENESS_FAILED"),
]


def test_demo_command_prints_each_decision_with_its_reason(
    default_pack: Path, model_dir: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--no-wait", "--model-dir", str(model_dir), "--keep", str(tmp_path / "w")]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " -> " in line]
    assert len(lines) == 4, result.output
    for line, (who, reason) in zip(lines, EXPECTED, strict=True):
        assert who in line and f"-> {reason}" in line and "[ok]" in line, line
    assert "liveness " in lines[3]  # the cause is printed with the refusal
    assert "/review" in result.output and "/api/v1" in result.output
    assert "screen: 请" in result.output  # challenge prompts in Chinese (and English)
    assert "registry synced from the server" in result.output  # the filling-station part
    assert "violation OVERFILL: 1" in result.output


def test_demo_events_reach_the_server_once_each(
    default_pack: Path, model_dir: Path, tmp_path: Path
) -> None:
    out: list[str] = []
    seen: dict[str, object] = {}

    def inspect(server) -> None:  # noqa: ANN001 - RunningServer, while it still runs
        seen["events"] = server_events(server.app, FORKLIFT)

    result = run_demo(tmp_path, out.append, model_dir, wait=inspect)
    assert [a.decision.reason.value for a in result.attempts] == [r for _, r in EXPECTED]
    events = seen["events"]
    decisions = [e for e in events if e["kind"] == "cab.decision"]
    assert [e["reason"] for e in decisions] == [r for _, r in EXPECTED]
    assert len({e["event_id"] for e in events}) == len(events)
    refused = decisions[3]["body"]["payload"]
    assert refused["decision"] == "denied" and refused["detail"].startswith("liveness ")
    assert refused["liveness_score"] is not None
    assert any("events delivered to the server" in line for line in result.station)
