"""SQLite (WAL) outbox of both agents: events and evidence survive restarts and kill -9.

The cab writes gate decisions, faults and evidence here; the filling station its fills and
violations (through `station.agent.OutboxSink`).

An event is committed (with its per-device sequence number) before anything acts on it, and
it is only marked delivered after the server's acknowledgement, so delivery is at least once;
the server de-duplicates by event id.

A damaged outbox never stops the agent: a file that fails SQLite's integrity check, is not a
database, or lacks the outbox's tables is moved aside (`<name>.corrupt-<UTC time>`, with its
`-wal`/`-shm`; never deleted), a fresh outbox starts (its sequence continued where the old
counter can still be read), and a notice is kept that `report_notices` turns into a
`device.fault` event (component `outbox`, `OUTBOX_QUARANTINED`) for the server. A single row
that cannot be read back as its event is moved to `bad_events` on delivery, with a notice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from contract.codes import ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import DeviceFaultEvent, DeviceFaultPayload, Event, EventBatchAck

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
CREATE TABLE IF NOT EXISTS bad_events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT,
    body TEXT,
    problem TEXT NOT NULL,
    set_aside REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message TEXT NOT NULL,
    created REAL NOT NULL,
    reported REAL
);
"""
_REQUIRED = ("counter", "events", "evidence", "used_codes")
"""Tables every outbox file has had; a file with tables but without these is not an outbox."""
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
"""SQLite errors that mean the file is damaged (busy, locked, I/O or full disks are not)."""
QUARANTINE_MARK = ".corrupt-"


def _expected_columns() -> dict[str, set[str]]:
    with sqlite3.connect(":memory:") as db:
        db.executescript(_SCHEMA)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: {str(r[1]) for r in db.execute(f"PRAGMA table_info({t})")}
            for t in tables
            if not t.startswith("sqlite_")
        }


_COLUMNS = _expected_columns()


def check_file(path: Path) -> str | None:
    """Why the outbox file at `path` is unusable, or None (a missing file is fine).

    Raises sqlite3.Error for problems that are not the file's damage (busy, I/O, disk full):
    those must not move a good outbox aside.
    """
    if not path.exists():
        return None
    if path.stat().st_size == 0:
        return "empty file (truncated)"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.DatabaseError as err:
        if err.sqlite_errorcode in _CORRUPT:
            return f"{err.sqlite_errorname}: {err}"
        raise
    try:
        found = db.execute("PRAGMA integrity_check").fetchall()
        if [tuple(r) for r in found] != [("ok",)]:
            return "integrity check: " + "; ".join(str(r[0]) for r in found[:5])
        names = [str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {
            name: {str(c[0]) for c in db.execute("SELECT name FROM pragma_table_info(?)", (name,))}
            for name in names
        }
    except sqlite3.DatabaseError as err:
        if err.sqlite_errorcode in _CORRUPT:
            return f"{err.sqlite_errorname}: {err}"
        raise
    finally:
        db.close()
    if not tables:
        return None
    for name, columns in _COLUMNS.items():
        if name not in tables:
            if name in _REQUIRED:
                return f"wrong schema: no table {name!r}"
            continue
        missing = sorted(columns - tables[name])
        if missing:
            return f"wrong schema: table {name!r} lacks {', '.join(missing)}"
    return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine_file(path: Path) -> Path:
    """Move the file (and its -wal/-shm) to `<name>.corrupt-<UTC time>`; return the new path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}{QUARANTINE_MARK}{stamp}")
    n = 1
    while target.exists():  # never overwrite an earlier quarantine
        target = path.with_name(f"{path.name}{QUARANTINE_MARK}{stamp}.{n}")
        n += 1
    path.replace(target)
    # The old WAL must go with it: left beside the fresh file, SQLite could replay it there.
    for side in ("-wal", "-shm"):
        extra = path.with_name(path.name + side)
        if extra.exists():
            extra.replace(target.with_name(target.name + side))
    _fsync_dir(path.parent)
    return target


@dataclass(frozen=True)
class Salvage:
    """What is still readable in a quarantined file and must carry over to the fresh one."""

    last_seq: int | None
    """Highest sequence number found: the fresh outbox continues after it."""
    used_codes: tuple[tuple[str, float], ...]
    """One-time override codes already used: they must stay used."""


def _salvage(quarantined: Path) -> Salvage:
    """Read what is still readable in a quarantined file (immutable: its bytes stay as they are)."""
    seqs: list[int] = []
    codes: list[tuple[str, float]] = []
    try:
        db = sqlite3.connect(f"{quarantined.resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error:
        return Salvage(None, ())
    try:
        for query in (
            "SELECT value FROM counter WHERE name = 'seq'",
            "SELECT MAX(seq) FROM events",
        ):
            try:
                row = db.execute(query).fetchone()
            except sqlite3.Error:
                continue
            if row is not None and isinstance(row[0], int):
                seqs.append(row[0])
        try:
            for code_id, used in db.execute("SELECT code_id, used FROM used_codes"):
                if isinstance(code_id, str) and isinstance(used, int | float):
                    codes.append((code_id, float(used)))
        except sqlite3.Error:
            pass  # a damaged page: keep the codes read before it
    finally:
        db.close()
    return Salvage(max(seqs) if seqs else None, tuple(codes))


@dataclass(frozen=True)
class Pending:
    """An undelivered event as stored."""

    seq: int
    event_id: str
    body: str
    attempts: int
    event: Event


class Outbox:
    """The device's durable event queue, evidence index and used override codes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        problem = check_file(path)
        self.quarantined: Path | None = None
        if problem is not None:
            self.quarantined = quarantine_file(path)
            logger.error("outbox %s unusable (%s): moved to %s", path, problem, self.quarantined)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event is on disk before the gate acts on it (power loss included).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if self.quarantined is not None:
            self._start_after_quarantine(self.quarantined, problem or "")

    def _start_after_quarantine(self, moved: Path, problem: str) -> None:
        found = _salvage(moved)
        restart = (
            "" if found.last_seq is not None else "; sequence restarted at 0 (counter unreadable)"
        )
        message = (
            f"outbox quarantined to {moved}: {problem}{restart}; "
            f"{len(found.used_codes)} used override code(s) carried over"
        )

        def step(db: sqlite3.Connection) -> None:
            if found.last_seq is not None:
                db.execute("INSERT INTO counter (name, value) VALUES ('seq', ?)", (found.last_seq,))
            db.executemany(
                "INSERT OR IGNORE INTO used_codes (code_id, used) VALUES (?, ?)", found.used_codes
            )
            db.execute(
                "INSERT INTO notices (message, created) VALUES (?, ?)",
                (message[:1024], time.time()),
            )

        self._tx(step)

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
            return _insert(db, build)

        event: Event = self._tx(step)
        return event

    def due(self, limit: int, now: float | None = None) -> list[Pending]:
        """Undelivered events whose retry time has come, oldest first.

        A row that does not read back as its own event (bad JSON, another id or seq) is moved
        to `bad_events` with a notice, so that one bad row cannot stop delivery.
        """
        moment = time.time() if now is None else now
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, event_id, body, attempts FROM events "
                    "WHERE delivered IS NULL AND next_attempt <= ? ORDER BY seq LIMIT ?",
                    (moment, limit),
                ).fetchall()
            good: list[Pending] = []
            bad: list[tuple[Any, str]] = []
            for row in rows:
                pending, problem = _read_row(row)
                if pending is not None:
                    good.append(pending)
                else:
                    bad.append((row[0], problem))
            if not bad:
                return good
            for seq, problem in bad:
                self._set_aside(seq, problem)

    def _set_aside(self, seq: Any, problem: str) -> None:
        logger.error("outbox row seq=%r set aside: %s", seq, problem)

        def step(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO bad_events (seq, event_id, body, problem, set_aside) "
                "SELECT seq, event_id, body, ?, ? FROM events WHERE seq = ?",
                (problem, time.time(), seq),
            )
            db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            message = f"outbox row seq={seq!r} set aside in table bad_events: {problem}"
            db.execute(
                "INSERT INTO notices (message, created) VALUES (?, ?)",
                (message[:1024], time.time()),
            )

        self._tx(step)

    def report_notices(self, device_id: str) -> list[Event]:
        """Turn unreported notices into device.fault events (OUTBOX_QUARANTINED), committed."""

        def step(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                "SELECT id, message, created FROM notices WHERE reported IS NULL ORDER BY id"
            ).fetchall()
            events = []
            for notice_id, message, created in rows:
                payload = DeviceFaultPayload(component="outbox", message=str(message)[:1024])
                at = datetime.fromtimestamp(float(created), UTC)

                def build(
                    seq: int, payload: DeviceFaultPayload = payload, at: datetime = at
                ) -> Event:
                    return DeviceFaultEvent(
                        event_id=uuid7(),
                        device_id=device_id,
                        seq=seq,
                        occurred_at=at,
                        reason=ReasonCode.OUTBOX_QUARANTINED,
                        severity=Severity.HIGH,
                        payload=payload,
                    )

                events.append(_insert(db, build))
                db.execute("UPDATE notices SET reported = ? WHERE id = ?", (time.time(), notice_id))
            return events

        events: list[Event] = self._tx(step)
        return events

    @staticmethod
    def parse(pending: Pending) -> Event:
        """The stored event as a contract object."""
        return pending.event

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


def _insert(db: sqlite3.Connection, build: Callable[[int], Event]) -> Event:
    """Allocate the next sequence number in `db`'s transaction and insert the built event."""
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


def _read_row(row: tuple[Any, ...]) -> tuple[Pending | None, str]:
    """The row as a Pending, or None and why it cannot be delivered."""
    seq, event_id, body, attempts = row
    if not isinstance(body, str):
        return None, f"body is {type(body).__name__}, not text"
    try:
        event = _EVENT.validate_json(body)
    except ValidationError as err:
        return None, f"body is not an event: {err.errors()[0]['msg']}"[:512]
    if str(event.event_id) != event_id or event.seq != seq:
        return None, f"row says {event_id}/{seq}, body says {event.event_id}/{event.seq}"
    if not isinstance(attempts, int):
        return None, f"attempts is {attempts!r}"
    return Pending(seq, event_id, body, attempts, event), ""
