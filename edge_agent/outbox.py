"""SQLite (WAL) outbox of both agents: events and evidence survive restarts and kill -9.

The cab writes gate decisions, faults and evidence here; the filling station its fills and
violations (through `station.agent.OutboxSink`).

An event is committed (with its per-device sequence number) before anything acts on it, and
it is only marked delivered after the server's acknowledgement, so delivery is at least once;
the server de-duplicates by event id.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from contract.messages import Event, EventBatchAck

logger = logging.getLogger(__name__)

_EVENT = TypeAdapter(Event)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS events_pending ON events (delivered, next_attempt);
CREATE TABLE IF NOT EXISTS evidence (
    sha256 TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    acked REAL
);
CREATE TABLE IF NOT EXISTS used_codes (code_id TEXT PRIMARY KEY, used REAL NOT NULL);
"""


@dataclass(frozen=True)
class Pending:
    """An undelivered event as stored."""

    seq: int
    event_id: str
    body: str
    attempts: int


class Outbox:
    """The device's durable event queue, evidence index and used override codes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event is on disk before the gate acts on it (power loss included).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def append(self, build: Callable[[int], Event]) -> Event:
        """Allocate the next sequence number, build the event with it, and commit it."""

        def step(db: sqlite3.Connection) -> Event:
            row = db.execute("SELECT value FROM counter WHERE name = 'seq'").fetchone()
            seq = 0 if row is None else int(row[0]) + 1
            db.execute(
                "INSERT INTO counter (name, value) VALUES ('seq', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (seq,),
            )
            event = build(seq)
            db.execute(
                "INSERT INTO events (seq, event_id, body, created) VALUES (?, ?, ?, ?)",
                (seq, str(event.event_id), event.model_dump_json(), time.time()),
            )
            return event

        event: Event = self._tx(step)
        return event

    def due(self, limit: int, now: float | None = None) -> list[Pending]:
        """Undelivered events whose retry time has come, oldest first."""
        moment = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, body, attempts FROM events "
                "WHERE delivered IS NULL AND next_attempt <= ? ORDER BY seq LIMIT ?",
                (moment, limit),
            ).fetchall()
        return [Pending(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    @staticmethod
    def parse(pending: Pending) -> Event:
        """The stored event as a contract object."""
        return _EVENT.validate_json(pending.body)

    def mark_acked(self, ack: EventBatchAck) -> int:
        """Mark every accepted or duplicate event delivered; return how many changed."""
        ids = [str(i) for i in (*ack.accepted, *ack.duplicates)]
        now = time.time()

        def step(db: sqlite3.Connection) -> int:
            changed = 0
            for event_id in ids:
                cursor = db.execute(
                    "UPDATE events SET delivered = ? WHERE event_id = ? AND delivered IS NULL",
                    (now, event_id),
                )
                changed += cursor.rowcount
            return changed

        changed: int = self._tx(step)
        return changed

    def mark_failed(self, seqs: list[int], initial_s: float, max_s: float) -> float:
        """Schedule a retry with exponential backoff; return the delay used."""
        now = time.time()

        def step(db: sqlite3.Connection) -> float:
            delay = initial_s
            for seq in seqs:
                row = db.execute("SELECT attempts FROM events WHERE seq = ?", (seq,)).fetchone()
                attempts = int(row[0]) + 1 if row else 1
                delay = min(max_s, initial_s * 2 ** (attempts - 1))
                db.execute(
                    "UPDATE events SET attempts = ?, next_attempt = ? WHERE seq = ?",
                    (attempts, now + delay, seq),
                )
            return delay

        delay: float = self._tx(step)
        return delay

    def depth(self) -> int:
        """Events not yet acknowledged."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM events WHERE delivered IS NULL").fetchone()
        return int(row[0])

    def purge_delivered(self, older_than_s: float) -> int:
        """Delete acknowledged events older than the limit."""
        cutoff = time.time() - older_than_s
        return int(
            self._tx(
                lambda db: (
                    db.execute(
                        "DELETE FROM events WHERE delivered IS NOT NULL AND delivered < ?",
                        (cutoff,),
                    ).rowcount
                )
            )
        )

    # --- evidence -----------------------------------------------------------------------

    def add_evidence(self, folder: Path, data: bytes, media_type: str) -> str:
        """Store an evidence image by content hash (written before it is indexed)."""
        sha = hashlib.sha256(data).hexdigest()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sha}.{'png' if media_type == 'image/png' else 'jpg'}"
        if not path.exists():
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        self._tx(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO evidence (sha256, media_type, path, size, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (sha, media_type, str(path), len(data), time.time()),
            )
        )
        return sha

    def evidence_due(self, limit: int) -> list[tuple[str, str, Path]]:
        """Unacknowledged evidence whose retry time has come: (sha256, media type, path)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sha256, media_type, path FROM evidence WHERE acked IS NULL "
                "AND next_attempt <= ? ORDER BY created LIMIT ?",
                (time.time(), limit),
            ).fetchall()
        return [(str(r[0]), str(r[1]), Path(r[2])) for r in rows]

    def evidence_acked(self, sha: str) -> None:
        """The server stored this image: its file may go."""
        self._tx(
            lambda db: db.execute(
                "UPDATE evidence SET acked = ? WHERE sha256 = ?", (time.time(), sha)
            )
        )

    def evidence_failed(self, sha: str, initial_s: float, max_s: float) -> None:
        """Back off before the next upload of this image."""

        def step(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT attempts FROM evidence WHERE sha256 = ?", (sha,)).fetchone()
            attempts = int(row[0]) + 1 if row else 1
            delay = min(max_s, initial_s * 2 ** (attempts - 1))
            db.execute(
                "UPDATE evidence SET attempts = ?, next_attempt = ? WHERE sha256 = ?",
                (attempts, time.time() + delay, sha),
            )

        self._tx(step)

    def prune_evidence(self, retention_s: float, max_bytes: int) -> int:
        """Delete acknowledged files, and the oldest unacknowledged past retention or size."""
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT sha256, path, size, created, acked FROM evidence ORDER BY created"
            ).fetchall()
        total = sum(int(r[2]) for r in rows)
        removed = 0
        for sha, path, size, created, acked in rows:
            over = total > max_bytes
            if acked is None and now - float(created) < retention_s and not over:
                continue
            if acked is None:
                logger.warning("evidence %s dropped unacknowledged (retention/size limit)", sha)
            Path(path).unlink(missing_ok=True)
            self._delete_evidence(str(sha))
            total -= int(size)
            removed += 1
        return removed

    def _delete_evidence(self, sha: str) -> None:
        self._tx(lambda db: db.execute("DELETE FROM evidence WHERE sha256 = ?", (sha,)))

    # --- one-time override codes ----------------------------------------------------------

    def use_code(self, code_id: str) -> bool:
        """Record a one-time code as used; False when it had been used before."""

        def step(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO used_codes (code_id, used) VALUES (?, ?)",
                (code_id, time.time()),
            )
            return cursor.rowcount == 1

        used: bool = self._tx(step)
        return used
