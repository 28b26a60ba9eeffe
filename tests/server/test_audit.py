"""The hash-chained audit log, `jifang server audit verify`, and signed event bundles."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from contract.messages import EvidenceRef
from jifang.cli import app as cli
from server.tables import AuditEntry
from tests.server.conftest import World
from tests.server.helpers import batch_of, denied_event


@pytest.fixture
def cli_env(world: World, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner pointed at the world's database and data folder."""
    settings = world.app.state.settings
    monkeypatch.setenv("JIFANG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("JIFANG_DATA_DIR", str(settings.data_dir))
    return CliRunner()


def _verify(runner: CliRunner):  # noqa: ANN202
    return runner.invoke(cli, ["server", "audit", "verify"])


def _seqs(world: World) -> list[int]:
    with world.app.state.sessions() as session:
        return list(session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))


def test_every_write_is_chained(world: World, cli_env: CliRunner) -> None:
    with world.app.state.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
        entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert actions[:4] == ["auth.login", "user.create", "auth.login", "user.create"]
    assert {"enterprise.create", "site.create", "device.register"} <= set(actions)
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.prev_hash == before.hash
    result = _verify(cli_env)
    assert result.exit_code == 0, result.output
    assert f"audit chain intact: {len(entries)} entries" in result.output


def test_an_edited_row_is_named(world: World, cli_env: CliRunner) -> None:
    target = _seqs(world)[2]
    with world.app.state.sessions() as session:
        session.execute(
            update(AuditEntry).where(AuditEntry.seq == target).values(actor="user:mallory")
        )
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {target}: edited" in result.output


def test_a_deleted_row_is_named(world: World, cli_env: CliRunner) -> None:
    seqs = _seqs(world)
    with world.app.state.sessions() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == seqs[3]))
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {seqs[3]}: deleted" in result.output


def test_a_deleted_last_row_is_named(world: World, cli_env: CliRunner) -> None:
    last = _seqs(world)[-1]
    with world.app.state.sessions() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.seq == last))
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {last}: deleted" in result.output


def test_an_inserted_row_is_named(world: World, cli_env: CliRunner) -> None:
    from server.audit import entry_hash

    with world.app.state.sessions() as session:
        last = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc())).first()
        assert last is not None
        seq, at, data = last.seq + 1, last.at, "{}"
        forged = AuditEntry(
            seq=seq,
            at=at,
            actor="user:mallory",
            action="user.create",
            target="user:mallory",
            data=data,
            prev_hash=last.hash,
            hash=entry_hash(
                seq, at, "user:mallory", "user.create", "user:mallory", data, last.hash
            ),
        )
        session.add(forged)
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {seq}: inserted" in result.output


def test_audit_verify_over_http(world: World) -> None:
    report = world.call("admin", "GET", "/api/v1/audit/verify").json()
    assert report["ok"] is True and report["problems"] == []


def test_export_event_writes_a_bundle_that_verifies_offline(
    world: World, cli_env: CliRunner, tmp_path: Path
) -> None:
    image = cv2.imencode(".jpg", np.full((16, 16, 3), 90, np.uint8))[1].tobytes()
    sha = hashlib.sha256(image).hexdigest()
    assert (
        world.crane.request(
            "PUT", f"/api/v1/evidence/{sha}", image, {"Content-Type": "image/jpeg"}
        ).status_code
        == 201
    )
    event = denied_event("crane-01", 1).model_copy(
        update={"evidence": (EvidenceRef(sha256=sha, media_type="image/jpeg"),)}
    )
    world.crane.post_batch(batch_of("crane-01", [event]))
    world.call(
        "supervisor",
        "POST",
        f"/api/v1/review/events/{event.event_id}/decisions",
        json={"outcome": "false_alarm", "comment": "本人, 光线差"},
    )
    out = tmp_path / "bundle.json"
    result = cli_env.invoke(cli, ["server", "export-event", str(event.event_id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(out.read_text(encoding="utf-8"))
    content = bundle["content"]
    assert content["event"]["event_id"] == str(event.event_id)
    assert base64.b64decode(content["evidence"][0]["data_b64"]) == image
    assert [e["action"] for e in content["audit_entries"]] == [
        "evidence.store",
        "events.ingest",
        "review.decision",
    ]
    assert content["decisions"][0]["outcome"] == "false_alarm"
    ok = cli_env.invoke(
        cli,
        [
            "server",
            "verify-bundle",
            str(out),
            "--public-key",
            world.app.state.server_key.public_b64,
        ],
    )
    assert ok.exit_code == 0, ok.output
    content["decisions"][0]["outcome"] = "confirmed_violation"
    out.write_text(json.dumps(bundle, ensure_ascii=False), encoding="utf-8")
    bad = cli_env.invoke(cli, ["server", "verify-bundle", str(out)])
    assert bad.exit_code == 1
    assert "signature does not verify" in bad.output


def test_bundle_over_http_and_unknown_event(world: World) -> None:
    event = denied_event("crane-01", 1)
    world.crane.post_batch(batch_of("crane-01", [event]))
    bundle = world.call("supervisor", "GET", f"/api/v1/events/{event.event_id}/bundle")
    assert bundle.status_code == 200
    from server.bundle import verify

    assert verify(bundle.json(), world.app.state.server_key.public_b64) == []
    missing = world.call("supervisor", "GET", "/api/v1/events/nope/bundle")
    assert missing.status_code == 404 and missing.json()["detail"] == "event not found"


def test_an_edited_and_rehashed_row_is_caught_at_the_next_link(
    world: World, cli_env: CliRunner
) -> None:
    from server.audit import entry_hash

    seqs = _seqs(world)
    target = seqs[2]
    with world.app.state.sessions() as session:
        row = session.get(AuditEntry, target)
        assert row is not None
        row.data = '{"role":"admin"}'
        row.hash = entry_hash(
            row.seq, row.at, row.actor, row.action, row.target, row.data, row.prev_hash
        )
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {target + 1}: inserted or re-linked" in result.output
    assert f"row {target} was edited and re-hashed" in result.output
