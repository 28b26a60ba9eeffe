"""A damaged outbox (defect 15 of issue 21): the agent starts, the file is kept, the server hears.

Damage is made with real files: a truncated outbox, random bytes, an empty file, a database of
another schema, and single rows that no longer read back as their event.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contract.codes import EventKind, GateState, ReasonCode
from contract.ids import uuid7
from contract.messages import DeviceFaultEvent, DeviceFaultPayload, Event
from edge_agent.outbox import QUARANTINE_MARK, Outbox
from tests.edge_agent.test_outbox import KEY, Receiver, receiver  # noqa: F401 - the fixture

DEVICE = "FL-0001"


def fault(seq: int) -> DeviceFaultEvent:
    return DeviceFaultEvent(
        event_id=uuid7(),
        device_id=DEVICE,
        seq=seq,
        occurred_at=datetime.now(UTC),
        reason=ReasonCode.CAMERA_LOST,
        payload=DeviceFaultPayload(component="camera", message=f"n{seq}"),
    )


def filled(path: Path, events: int) -> bytes:
    """An outbox file with `events` events, checkpointed; its bytes."""
    outbox = Outbox(path)
    for _ in range(events):
        outbox.append(fault)
    outbox.close()
    return path.read_bytes()


def truncated(path: Path) -> None:
    data = filled(path, 200)
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(16384))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def wrong_schema(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload BLOB)")
        db.execute("INSERT INTO events (payload) VALUES (x'00ff')")


def other_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "it\'s readings" (t REAL, v REAL)')  # a quote in a name


@pytest.mark.parametrize(
    "damage",
    [truncated, random_bytes, empty, wrong_schema, other_database],
    ids=lambda f: f.__name__,
)
def test_damaged_outbox_is_quarantined_and_reported(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "outbox.sqlite"
    damage(path)
    original = path.read_bytes()
    outbox = Outbox(path)
    try:
        (moved,) = [
            p for p in tmp_path.iterdir() if p.name.startswith(f"outbox.sqlite{QUARANTINE_MARK}")
        ]
        assert moved == outbox.quarantined
        assert moved.read_bytes() == original  # kept byte for byte, never deleted
        assert outbox.depth() == 0
        added = outbox.append(fault)  # the fresh outbox works
        (notice,) = outbox.report_notices(DEVICE)
        assert isinstance(notice, DeviceFaultEvent)
        assert notice.reason == ReasonCode.OUTBOX_QUARANTINED
        assert notice.payload.component == "outbox" and str(moved) in notice.payload.message
        assert notice.seq > added.seq
        assert outbox.report_notices(DEVICE) == []  # reported once
        queued = [p.event for p in outbox.due(10)]
        assert [e.event_id for e in queued] == [added.event_id, notice.event_id]
    finally:
        outbox.close()


def test_notice_survives_a_restart_before_it_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    random_bytes(path)
    Outbox(path).close()  # quarantined, then the agent dies before reporting
    again = Outbox(path)
    try:
        assert again.quarantined is None  # the fresh file is healthy
        (notice,) = again.report_notices(DEVICE)
        assert "random" not in notice.payload.message and "SQLITE_NOTADB" in notice.payload.message
    finally:
        again.close()


def test_sequence_and_used_codes_carry_over_a_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    filled(path, 300)
    before = Outbox(path)
    assert before.use_code("override-7")
    before.close()
    data = bytearray(path.read_bytes())
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()
        (page,) = db.execute("PRAGMA page_size").fetchone()
    start = (root - 1) * page  # the events table's root page; the counter lives elsewhere
    data[start : start + 600] = b"\xa5" * 600
    path.write_bytes(bytes(data))
    outbox = Outbox(path)
    try:
        assert outbox.quarantined is not None
        (notice,) = outbox.report_notices(DEVICE)
        assert "restarted" not in notice.payload.message
        assert notice.seq == 300  # after the 300 events (seq 0..299) of the damaged file
        assert "1 used override code(s) carried over" in notice.payload.message
        assert not outbox.use_code("override-7")  # a used one-time code stays used
        assert outbox.use_code("override-8")
    finally:
        outbox.close()


def test_an_older_outbox_without_the_new_tables_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    filled(path, 3)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE notices")
        db.execute("DROP TABLE bad_events")
    outbox = Outbox(path)
    try:
        assert outbox.quarantined is None and outbox.depth() == 3
        assert outbox.append(fault).seq == 3
        assert outbox.report_notices(DEVICE) == []
    finally:
        outbox.close()


def _corrupt_rows(path: Path, other_body: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute('UPDATE events SET body = \'{"kind": "device.fault", \' WHERE seq = 1')
        db.execute("UPDATE events SET body = ? WHERE seq = 3", (other_body,))
        db.execute("UPDATE events SET attempts = 'many' WHERE seq = 4")


def test_bad_rows_are_set_aside_and_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    try:
        made: list[Event] = [outbox.append(fault) for _ in range(6)]
        original = {
            int(r[0]): str(r[1])
            for r in sqlite3.connect(path).execute("SELECT seq, body FROM events")
        }
        _corrupt_rows(path, made[0].model_dump_json())  # seq 3 now claims to be event 0
        due = outbox.due(10)
        assert [p.seq for p in due] == [0, 2, 5]
        with sqlite3.connect(path) as db:
            kept = {
                int(r[0]): (r[1], r[2])
                for r in db.execute("SELECT seq, body, problem FROM bad_events")
            }
        assert sorted(kept) == [1, 3, 4]
        assert kept[4][0] == original[4]  # the row is kept as it was
        assert (
            "not an event" in kept[1][1] and "body says" in kept[3][1] and "attempts" in kept[4][1]
        )
        notices = outbox.report_notices(DEVICE)
        assert len(notices) == 3
        assert all(n.reason == ReasonCode.OUTBOX_QUARANTINED for n in notices)
        assert "seq=1" in notices[0].payload.message
        assert outbox.depth() == 3 + 3
    finally:
        outbox.close()


def test_delivery_goes_on_past_a_bad_row(receiver: Receiver, tmp_path: Path) -> None:  # noqa: F811
    from edge_agent.config import parse_config
    from edge_agent.delivery import deliver_once
    from edge_agent.uplink import Uplink

    config = parse_config(
        {
            "device": {"id": DEVICE, "kind": "forklift", "site_id": "s"},
            "server": {"url": receiver.url, "device_key": KEY.decode(), "batch_size": 10},
            "camera": {"source": 0},
            "store": {"dir": str(tmp_path)},
        }
    )
    outbox = Outbox(tmp_path / "outbox.sqlite")
    uplink = Uplink(receiver.url, DEVICE, KEY, 5.0)
    try:
        made = [outbox.append(fault) for _ in range(3)]
        with sqlite3.connect(outbox.path) as db:
            db.execute("UPDATE events SET body = 'garbage' WHERE seq = 1")
        assert deliver_once(config, outbox, uplink) == 2
        assert deliver_once(config, outbox, uplink) == 1  # the notice, reported on this pass
        assert outbox.depth() == 0
        arrived = set(receiver.bodies)
        assert {str(made[0].event_id), str(made[2].event_id)} <= arrived
        assert str(made[1].event_id) not in arrived
        assert any('"OUTBOX_QUARANTINED"' in body for body in receiver.bodies.values())
    finally:
        uplink.close()
        outbox.close()


def test_a_busy_outbox_is_not_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    filled(path, 2)
    holder = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            Outbox(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [p for p in tmp_path.iterdir() if QUARANTINE_MARK in p.name] == []
    outbox = Outbox(path)
    try:
        assert outbox.depth() == 2
    finally:
        outbox.close()


def test_cab_agent_starts_on_a_corrupt_outbox_and_stays_locked(
    make_gate, frames, tmp_path: Path
) -> None:
    from edge_agent.cab.sources import ReplayFeed

    store = tmp_path / "store"
    store.mkdir()
    garbage = os.urandom(8192)
    (store / "outbox.sqlite").write_bytes(garbage)
    parts = make_gate(snapshot=False)
    assert parts.outbox.quarantined is not None
    assert parts.outbox.quarantined.read_bytes() == garbage
    assert parts.gate.status.state == GateState.LOCKED
    assert parts.interlock.read()["enable"] is False
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert not decision.authorized  # no gallery: fails closed
    assert parts.interlock.read()["enable"] is False
    events = [p.event for p in parts.outbox.due(100)]
    assert events[0].reason == ReasonCode.OUTBOX_QUARANTINED
    assert events[-1].kind == EventKind.CAB_DECISION


WRITER = """
import sys
from pathlib import Path
from tests.edge_agent.test_outbox_recovery import fault
from edge_agent.outbox import Outbox

outbox = Outbox(Path(sys.argv[1]))
while True:
    event = outbox.append(fault)
    print(event.event_id, flush=True)  # committed before it is printed
"""


def test_kill_9_while_writing_is_not_mistaken_for_damage(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    path = tmp_path / "outbox.sqlite"
    repo = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(repo)},
        cwd=repo,
        text=True,
    )
    assert child.stdout is not None
    committed = [child.stdout.readline().strip() for _ in range(200)]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    outbox = Outbox(path)
    try:
        assert outbox.quarantined is None  # WAL recovery, not quarantine
        stored = {p.event_id for p in outbox.due(100_000)}
        assert set(committed) <= stored  # every committed event is still there
        assert outbox.report_notices(DEVICE) == []
    finally:
        outbox.close()


def test_station_agent_starts_on_a_corrupt_outbox_and_refuses_scans(tmp_path: Path) -> None:
    from contract.auth import public_key_b64
    from edge_agent.station.domain import CodeScan
    from edge_agent.station.sim import registry as reg
    from tests.edge_agent.station.test_sync import KEY as REGISTRY_KEY
    from tests.edge_agent.station.test_sync import _agent

    garbage = os.urandom(8192)
    (tmp_path / "outbox.sqlite").write_bytes(garbage)
    agent, scale = _agent(tmp_path, public_key_b64(REGISTRY_KEY.public_key()))
    try:
        assert agent.outbox.quarantined is not None
        assert agent.outbox.quarantined.read_bytes() == garbage
        (queued,) = [p.event for p in agent.outbox.due(10)]
        assert queued.reason == ReasonCode.OUTBOX_QUARANTINED
        assert queued.device_id == agent.config.device.id
        # Still fail closed: never synced, so every scan is refused.
        assert not agent.pipeline.rules.on_scan(CodeScan(0.0, scale.scale_id, reg.GOOD[0]))
    finally:
        agent.outbox.close()
