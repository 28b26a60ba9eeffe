"""Defect 14: the audit chain proves itself against a copy of the database.

The attack of the issue, on SQLite and PostgreSQL: one event changed NO_MATCH -> AUTHORIZED,
100 events deleted, then the chain re-hashed with its head. The chain is keyed (the audit key
lives outside the database) and covers the event rows, and signed checkpoints catch what no
key can (a chain cut back at its end, or re-sealed by a holder of the key).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from contract.codes import ReasonCode
from jifang.cli import app as cli
from server import audit
from server.tables import AuditEntry, Counter, Event
from tests.server.conftest import World
from tests.server.helpers import batch_of, denied_event

BATCHES = 3
PER_BATCH = 60


@pytest.fixture
def cli_env(world: World, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner pointed at the world's database and data folder (and so its audit key)."""
    settings = world.app.state.settings
    monkeypatch.setenv("JIFANG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("JIFANG_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("JIFANG_AUDIT_KEY", raising=False)
    monkeypatch.delenv("JIFANG_AUDIT_KEY_FILE", raising=False)
    return CliRunner()


@pytest.fixture
def stored(world: World) -> list[str]:
    """180 denied starts (NO_MATCH) of crane-01 in three batches; their ids by device seq."""
    ids = []
    for batch in range(BATCHES):
        events = [denied_event("crane-01", batch * PER_BATCH + i) for i in range(PER_BATCH)]
        answer = world.crane.post_batch(batch_of("crane-01", events))
        assert answer.status_code == 200, answer.text
        ids += [str(e.event_id) for e in events]
    return ids


def _verify(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, ["server", "audit", "verify", *args])


def _checkpoint(runner: CliRunner, path: Path) -> Path:
    made = runner.invoke(cli, ["server", "audit", "checkpoint", "--out", str(path)])
    assert made.exit_code == 0, made.output
    return path


def _sessions(world: World) -> Session:
    session: Session = world.app.state.sessions()
    return session


def _authorize(session: Session, event_id: str) -> None:
    """The edit of the issue: a refused start turned into an authorized one."""
    row = session.get(Event, event_id)
    assert row is not None and row.reason == ReasonCode.NO_MATCH
    body = dict(row.body)
    body["reason"] = "AUTHORIZED"
    body["payload"] = {**body["payload"], "decision": "authorized", "state_to": "unlocked"}
    session.execute(
        update(Event)
        .where(Event.event_id == event_id)
        .values(reason="AUTHORIZED", flagged=False, review_status="none", body=body)
    )


def _rehash(session: Session, dropped: set[str]) -> None:
    """What someone with the database but not the key can do: drop the deleted events from
    their ingest entries, then recompute every hash and the head, as the old chain allowed."""
    prev = audit.GENESIS
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        if entry.action == audit.INGEST_ACTION:
            data = json.loads(entry.data)
            data["event_ids"] = [i for i in data["event_ids"] if i not in dropped]
            entry.data = audit.canonical(data)
        entry.prev_hash = prev
        entry.hash = audit.entry_hash(
            entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.data, prev
        )
        prev = entry.hash
    session.execute(update(Counter).where(Counter.name == audit.AUDIT_COUNTER).values(text=prev))


def test_an_intact_database_verifies_with_and_without_a_checkpoint(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    result = _verify(cli_env)
    assert result.exit_code == 0, result.output
    assert "audit chain intact" in result.output
    with _sessions(world) as session:
        assert all(e.mac for e in session.scalars(select(Event)))
        assert session.scalar(select(AuditEntry.mac).where(AuditEntry.mac == "")) is None
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    document = json.loads(checkpoint.read_text(encoding="utf-8"))
    assert set(document["content"]) == {"kind", "seq", "count", "head_hash", "at", "audit_key_id"}
    # Rows written after the checkpoint are fine: the checkpoint vouches for a prefix.
    world.crane.post_batch(batch_of("crane-01", [denied_event("crane-01", 999)]))
    later = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert later.exit_code == 0, later.output
    assert f"holds the checkpoint of {document['content']['at']}" in later.output


def test_an_edited_event_is_named(world: World, stored: list[str], cli_env: CliRunner) -> None:
    target = stored[75]
    with _sessions(world) as session:
        _authorize(session, target)
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"event {target} (device crane-01, seq 75): edited" in result.output
    assert result.output.count("edited") == 1


def test_deleted_events_are_named(world: World, stored: list[str], cli_env: CliRunner) -> None:
    gone = stored[40:140]
    with _sessions(world) as session:
        session.execute(delete(Event).where(Event.event_id.in_(gone)))
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    for event_id in gone:
        assert f"event {event_id} (device crane-01): deleted (listed by audit row" in result.output
    assert result.output.count(": deleted") == 100


def test_the_defect_14_attack_is_caught(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    """Edit one event, delete 100, re-hash the chain with its head: caught by the key alone,
    and by the checkpoint kept outside."""
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    edited, gone = stored[10], stored[60:160]
    with _sessions(world) as session:
        ingests = list(
            session.scalars(
                select(AuditEntry.seq)
                .where(AuditEntry.action == audit.INGEST_ACTION)
                .order_by(AuditEntry.seq)
            )
        )
        last = session.scalar(select(func.max(AuditEntry.seq)))
        _authorize(session, edited)
        session.execute(delete(Event).where(Event.event_id.in_(gone)))
        _rehash(session, set(gone))
        session.commit()
    assert last is not None
    result = _verify(cli_env)
    assert result.exit_code == 1
    # The old, unkeyed checks find nothing: every hash and link is consistent again.
    assert "its contents do not match its hash" not in result.output
    assert "re-linked" not in result.output and ": deleted" not in result.output
    # The seals do: the edited event, and every audit row from the first rewritten one on.
    assert f"event {edited} (device crane-01, seq 10): edited" in result.output
    rewritten = ingests[1]  # the batch that listed stored[60]
    for seq in range(rewritten, last + 1):
        assert f"audit row {seq}: not sealed by the audit key" in result.output
    assert f"audit row {rewritten - 1}: not sealed" not in result.output
    against = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert against.exit_code == 1
    head = json.loads(checkpoint.read_text(encoding="utf-8"))["content"]
    assert f"audit row {head['seq']}: differs from the checkpoint of {head['at']}" in (
        against.output
    )


def test_a_chain_cut_back_at_its_end_is_caught_by_the_checkpoint(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    head = json.loads(checkpoint.read_text(encoding="utf-8"))["content"]
    with _sessions(world) as session:
        last_two = list(
            session.scalars(
                select(AuditEntry.seq)
                .where(AuditEntry.action == audit.INGEST_ACTION)
                .order_by(AuditEntry.seq.desc())
                .limit(2)
            )
        )
        cut = min(last_two)
        session.execute(delete(Event).where(Event.batch_audit_seq >= cut))
        session.execute(delete(AuditEntry).where(AuditEntry.seq >= cut))
        new_head = session.get(AuditEntry, cut - 1)
        assert new_head is not None
        session.execute(
            update(Counter)
            .where(Counter.name == audit.AUDIT_COUNTER)
            .values(value=cut - 1, text=new_head.hash)
        )
        session.commit()
    # What is left is a valid, sealed prefix: only an outside record can tell.
    assert _verify(cli_env).exit_code == 0
    result = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert result.exit_code == 1
    assert f"audit row {cut}: deleted (rows {cut}..{head['seq']} are missing" in result.output


def test_resealing_with_the_key_is_caught_by_the_checkpoint(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    """An insider with the audit key can re-seal an edit; the signed checkpoint still holds."""
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    key = audit.load_key(world.app.state.settings)
    with _sessions(world) as session:
        session.execute(
            update(AuditEntry)
            .where(AuditEntry.action == "user.create")
            .values(data=audit.canonical({"role": "admin"}))
        )
        _rehash(session, set())
        for entry in session.scalars(select(AuditEntry)):
            entry.mac = audit.entry_mac(key, entry.seq, entry.hash)
        session.commit()
    assert _verify(cli_env).exit_code == 0
    result = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert result.exit_code == 1
    assert "differs from the checkpoint" in result.output


def test_an_event_resealed_with_the_key_is_caught(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    """The ingest entry records a digest of its events, so the chain (and a checkpoint of it)
    covers their contents: re-sealing an edited event alone is named; rewriting the entry too
    is caught by the checkpoint."""
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    key = audit.load_key(world.app.state.settings)
    with _sessions(world) as session:
        _authorize(session, stored[5])
        row = session.get(Event, stored[5])
        assert row is not None
        row.mac = audit.event_mac(key, {c.name: getattr(row, c.name) for c in Event.__table__.c})
        batch = row.batch_audit_seq
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert f"audit row {batch}: its events differ from the digest it recorded" in result.output
    with _sessions(world) as session:
        entry = session.get(AuditEntry, batch)
        assert entry is not None
        rows = session.scalars(select(Event).where(Event.batch_audit_seq == batch))
        data = json.loads(entry.data)
        data["events_sha256"] = audit.events_digest(
            [{c.name: getattr(r, c.name) for c in Event.__table__.c} for r in rows]
        )
        entry.data = audit.canonical(data)
        _rehash(session, set())
        for item in session.scalars(select(AuditEntry)):
            item.mac = audit.entry_mac(key, item.seq, item.hash)
        session.commit()
    assert _verify(cli_env).exit_code == 0
    against = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert against.exit_code == 1 and "differs from the checkpoint" in against.output


def test_a_forged_checkpoint_is_refused(
    world: World, stored: list[str], cli_env: CliRunner, tmp_path: Path
) -> None:
    checkpoint = _checkpoint(cli_env, tmp_path / "head.json")
    document = json.loads(checkpoint.read_text(encoding="utf-8"))
    document["content"]["seq"] -= 1
    checkpoint.write_text(json.dumps(document), encoding="utf-8")
    result = _verify(cli_env, "--checkpoint", str(checkpoint))
    assert result.exit_code == 2
    assert "checkpoint signature does not verify" in result.output
    checkpoint.write_text("{not json", encoding="utf-8")
    assert _verify(cli_env, "--checkpoint", str(checkpoint)).exit_code == 2


def test_a_missing_or_wrong_key_is_a_clear_error(
    world: World, stored: list[str], cli_env: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = world.app.state.settings
    path = settings.audit_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text(encoding="ascii").strip()
    path.unlink()
    missing = _verify(cli_env)
    assert missing.exit_code == 2
    assert f"no audit key: {path} does not exist" in missing.output
    assert not path.exists()  # verify never makes a key up
    # A command that writes would create a new key: it refuses one that sealed nothing.
    fresh = cli_env.invoke(cli, ["server", "migrate"])
    assert fresh.exit_code == 2
    assert "did not seal the latest audit rows" in fresh.output
    assert _verify(cli_env).exit_code == 1  # under the new key nothing is sealed
    # The original key given by environment works again.
    monkeypatch.setenv("JIFANG_AUDIT_KEY", secret)
    assert _verify(cli_env).exit_code == 0
    monkeypatch.setenv("JIFANG_AUDIT_KEY", "abc")
    short = _verify(cli_env)
    assert short.exit_code == 2 and "JIFANG_AUDIT_KEY" in short.output
    monkeypatch.delenv("JIFANG_AUDIT_KEY")
    monkeypatch.setenv("JIFANG_AUDIT_KEY_FILE", str(path.parent / "elsewhere.key"))
    named = _verify(cli_env)
    assert named.exit_code == 2 and "elsewhere.key does not exist" in named.output
    assert not (path.parent / "elsewhere.key").exists()


def test_checkpoints_over_http(world: World, stored: list[str]) -> None:
    made = world.call("admin", "GET", "/api/v1/audit/checkpoint")
    assert made.status_code == 200, made.text
    document = made.json()
    assert document["public_key"] == world.app.state.server_key.public_b64
    held = world.call("admin", "POST", "/api/v1/audit/verify", json=document).json()
    assert held["ok"] is True, held
    assert world.call("supervisor", "GET", "/api/v1/audit/checkpoint").status_code == 403
    forged = {**document, "content": {**document["content"], "count": 1}}
    refused = world.call("admin", "POST", "/api/v1/audit/verify", json=forged)
    assert refused.status_code == 400
    assert "checkpoint signature does not verify" in refused.json()["detail"]
    with _sessions(world) as session:
        _authorize(session, stored[0])
        session.commit()
    report = world.call("admin", "POST", "/api/v1/audit/verify", json=document).json()
    assert report["ok"] is False
    assert any(f"event {stored[0]}" in p and "edited" in p for p in report["problems"])
    broken = world.call("admin", "GET", "/api/v1/audit/checkpoint")
    assert broken.status_code == 409
    assert broken.json()["detail"] == "audit chain does not verify: no checkpoint"


def test_an_inserted_event_is_named(world: World, stored: list[str], cli_env: CliRunner) -> None:
    with _sessions(world) as session:
        row = session.get(Event, stored[0])
        assert row is not None
        values = {c.name: getattr(row, c.name) for c in Event.__table__.columns}
        values["event_id"] = "018f0000-0000-7000-8000-000000000001"
        values["seq"] = 5000
        session.add(Event(**values))
        values = {**values, "event_id": "018f0000-0000-7000-8000-000000000002"}
        values["batch_audit_seq"] = None
        session.add(Event(**values))
        session.commit()
    result = _verify(cli_env)
    assert result.exit_code == 1
    assert (
        "event 018f0000-0000-7000-8000-000000000001 (device crane-01, seq 5000): inserted "
        "(audit row"
    ) in result.output
    assert (
        "event 018f0000-0000-7000-8000-000000000002 (device crane-01, seq 5000): inserted "
        "(it names no audit row)"
    ) in result.output


def test_the_key_file_is_private(world: World) -> None:
    path = world.app.state.settings.audit_key_path
    assert path.parent == world.app.state.settings.key_dir
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text(encoding="ascii").strip())) == audit.KEY_BYTES
