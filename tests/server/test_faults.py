"""Faults at the ingest boundary (issue 21, defects 8, 9, 12, 13): conflicting event ids, damaged
evidence, a full disk and a locked database, over real HTTP on both databases."""

from __future__ import annotations

import errno
import hashlib
import inspect
import os
import shutil
import sqlite3
import threading
from collections import namedtuple
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from contract.codes import ReasonCode
from contract.messages import EventBatchAck
from server.api.routes import events as event_routes
from server.api.routes import operators as operator_routes
from server.api.routes import ops
from server.bundle import evidence_path
from server.ingest import ingest
from server.tables import AuditEntry, Event
from tests.server.conftest import World
from tests.server.helpers import authorized_event, batch_of, denied_event


def _count(world: World, table: type) -> int:
    with world.app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def _audit(world: World, action: str) -> list[AuditEntry]:
    with world.app.state.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _jpeg(seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def _put(world: World, data: bytes) -> int:
    sha = hashlib.sha256(data).hexdigest()
    response = world.crane.request(
        "PUT", f"/api/v1/evidence/{sha}", data, {"Content-Type": "image/jpeg"}
    )
    return response.status_code


# --- defect 8: event id conflicts -------------------------------------------------------------


def test_an_event_id_reused_by_another_device_is_rejected_and_audited(world: World) -> None:
    original = denied_event("crane-01", 1)
    assert world.crane.post_batch(batch_of("crane-01", [original])).status_code == 200
    stolen = original.model_copy(update={"device_id": "forklift-01"})
    own = denied_event("forklift-01", 2)
    response = world.forklift.post_batch(batch_of("forklift-01", [stolen, own]))
    assert response.status_code == 200, response.text
    ack = EventBatchAck.model_validate_json(response.text)
    assert ack.accepted == (own.event_id,)
    assert ack.duplicates == ()
    assert [(r.event_id, r.reason) for r in ack.rejected] == [(original.event_id, "event_id_taken")]
    with world.app.state.sessions() as session:
        row = session.get(Event, str(original.event_id))
        assert row is not None and row.device_id == "crane-01"
    [entry] = _audit(world, "events.reject")
    assert entry.actor == "device:forklift-01"
    assert str(original.event_id) in entry.data and "event_id_taken" in entry.data


def test_a_resent_id_with_changed_content_is_rejected_a_true_duplicate_is_acked(
    world: World,
) -> None:
    event = denied_event("crane-01", 1)
    assert world.crane.post_batch(batch_of("crane-01", [event])).status_code == 200
    changed = event.model_copy(update={"reason": ReasonCode.LOW_QUALITY})
    ack = EventBatchAck.model_validate_json(
        world.crane.post_batch(batch_of("crane-01", [changed])).text
    )
    assert ack.accepted == () and ack.duplicates == ()
    assert [(r.event_id, r.reason) for r in ack.rejected] == [(event.event_id, "content_differs")]
    with world.app.state.sessions() as session:
        row = session.get(Event, str(event.event_id))
        assert row is not None and row.reason == "NO_MATCH"  # the stored event is untouched
    assert len(_audit(world, "events.reject")) == 1
    # The same content again (a real retry) stays an idempotent acknowledgement.
    again = world.crane.post_batch(batch_of("crane-01", [event]))
    assert '"rejected"' not in again.text  # older agents refuse unknown keys
    replay = EventBatchAck.model_validate_json(again.text)
    assert replay.duplicates == (event.event_id,) and replay.rejected == ()
    assert _count(world, Event) == 1


def test_a_row_stored_before_the_content_hash_is_compared_by_its_body(world: World) -> None:
    event = authorized_event("crane-01", 1)
    world.crane.post_batch(batch_of("crane-01", [event]))
    with world.app.state.sessions() as session:
        row = session.get(Event, str(event.event_id))
        assert row is not None and row.content_sha256 is not None
        row.content_sha256 = None  # as migration 0005 leaves older rows
        session.commit()
    replay = EventBatchAck.model_validate_json(
        world.crane.post_batch(batch_of("crane-01", [event])).text
    )
    assert replay.duplicates == (event.event_id,)
    changed = event.model_copy(update={"seq": 7})
    conflict = EventBatchAck.model_validate_json(
        world.crane.post_batch(batch_of("crane-01", [changed])).text
    )
    assert [r.reason for r in conflict.rejected] == ["content_differs"]


# --- defect 9: damaged or missing evidence is repaired by a re-upload ---------------------------


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_a_reupload_replaces_a_damaged_evidence_file(world: World, damage: str) -> None:
    data = _jpeg()
    sha = hashlib.sha256(data).hexdigest()
    assert _put(world, data) == 201
    path = evidence_path(world.app.state.settings.evidence_dir, sha)
    assert path.read_bytes() == data
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    assert _put(world, data) == 201
    assert path.read_bytes() == data
    assert len(_audit(world, "evidence.repair")) == 1
    assert _put(world, data) == 200  # intact now: nothing rewritten
    assert len(_audit(world, "evidence.repair")) == 1
    assert not list(path.parent.glob("*.tmp"))


def test_a_wrong_reupload_never_replaces_a_stored_file(world: World) -> None:
    data = _jpeg()
    sha = hashlib.sha256(data).hexdigest()
    assert _put(world, data) == 201
    path = evidence_path(world.app.state.settings.evidence_dir, sha)
    path.unlink()
    other = _jpeg(seed=1)
    response = world.crane.request(
        "PUT", f"/api/v1/evidence/{sha}", other, {"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "evidence hash mismatch"
    assert not path.exists()


# --- defect 13: disk full ---------------------------------------------------------------------


def test_disk_full_answers_507_and_leaves_no_temp_file(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jpeg()
    sha = hashlib.sha256(data).hexdigest()
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, chunk: bytes | memoryview) -> int:
        # The hardware boundary: the first bytes go out, then the disk is full.
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(chunk)[:10])

    monkeypatch.setattr("server.evidence.os.write", full_disk)
    response = world.crane.request(
        "PUT", f"/api/v1/evidence/{sha}", data, {"Content-Type": "image/jpeg"}
    )
    assert response.status_code == 507
    assert response.json()["detail"] == "evidence storage full"
    evidence_dir = world.app.state.settings.evidence_dir
    path = evidence_path(evidence_dir, sha)
    assert not path.exists()
    assert [p for p in evidence_dir.rglob("*") if p.is_file()] == []  # no leftover .tmp
    assert _audit(world, "evidence.store") == []
    monkeypatch.undo()
    assert _put(world, data) == 201  # space again: the device's retry stores it
    assert path.read_bytes() == data


DiskUsage = namedtuple("DiskUsage", "total used free")


def test_readyz_is_not_ready_when_the_data_folder_is_almost_full(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.http.get("/readyz").status_code == 200
    minimum = world.app.state.settings.readyz_min_free_bytes
    monkeypatch.setattr(
        shutil, "disk_usage", lambda _path: DiskUsage(10**12, 10**12 - minimum + 1, minimum - 1)
    )
    response = world.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "data folder almost full"
    assert response.headers["Retry-After"] == str(world.app.state.settings.busy_retry_after_s)
    assert world.http.get("/healthz").status_code == 200  # the process itself is up


def test_readyz_is_not_ready_when_the_database_is_unreachable(world: World) -> None:
    from server.db import make_engine, session_factory

    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    healthy = world.app.state.sessions
    world.app.state.sessions = session_factory(engine)
    try:
        response = world.http.get("/readyz")
    finally:
        world.app.state.sessions = healthy
        engine.dispose()
    assert response.status_code == 503
    assert response.json()["detail"] == "database unavailable"
    assert world.http.get("/readyz").status_code == 200


# --- defect 12: a locked database --------------------------------------------------------------


def test_routes_with_database_work_run_off_the_event_loop() -> None:
    # An `async def` route doing sync database work stalls every request while SQLite is
    # locked (busy_timeout); plain `def` routes run in the threadpool.
    for router in (ops.router, event_routes.router, operator_routes.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            assert not inspect.iscoroutinefunction(route.endpoint), route.path


def test_a_locked_sqlite_database_answers_503_with_retry_after(
    world: World, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite file locking")
    database = make_url(db_url).database
    assert database is not None
    event = denied_event("crane-01", 1)
    waiting = threading.Event()
    real_ingest = ingest

    def ingest_at_the_lock(*args: Any, **kwargs: Any) -> Any:
        waiting.set()  # the request is in the server, about to wait on the lock
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr("server.api.routes.events.ingest", ingest_at_the_lock)
    answers: list[httpx.Response] = []
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        post = threading.Thread(
            target=lambda: answers.append(world.crane.post_batch(batch_of("crane-01", [event]))),
            name="locked-post",
        )
        post.start()
        assert waiting.wait(30)
        health = world.http.get("/healthz")
        # The loop answered while the ingest still waited on SQLite's busy timeout.
        still_waiting = post.is_alive()
        post.join(60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert health.status_code == 200
    assert still_waiting
    [response] = answers
    assert response.status_code == 503, response.text
    assert response.json()["detail"] == "database busy"
    assert response.headers["Retry-After"] == str(world.app.state.settings.busy_retry_after_s)
    # Nothing was acknowledged, so the device retries; the retry is stored once.
    retry = EventBatchAck.model_validate_json(
        world.crane.post_batch(batch_of("crane-01", [event])).text
    )
    assert retry.accepted == (event.event_id,)
    assert _count(world, Event) == 1


def test_busy_errors_are_told_from_unreachable_ones() -> None:
    from sqlalchemy.exc import OperationalError

    from server.api.errors import is_busy

    class PgLockTimeout(Exception):
        sqlstate = "55P03"

    assert is_busy(OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")))
    assert is_busy(OperationalError("UPDATE", {}, PgLockTimeout("canceling statement")))
    assert not is_busy(OperationalError("SELECT", {}, ConnectionRefusedError("refused")))
