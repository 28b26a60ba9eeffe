"""The audit trail: a hash chain of audit rows, sealed with a key kept outside the database.

Every write appends an entry carrying the previous entry's SHA-256 (`hash`, checkable offline,
as bundles do). Each entry and each stored event is also sealed with HMAC-SHA256 under the
audit key (`mac`), which lives in a file or an environment variable, never in the database:
someone with a copy of the database can edit a row and re-hash the chain, but cannot re-seal
it. An `events.ingest` entry lists its events, and each event's seal covers the entry it came
with, so an edited, deleted or inserted event row is named too. Signed checkpoints (head hash,
row count, time; Ed25519 with the server key) kept outside the database catch what no key can:
a chain cut back at its end, or re-sealed by someone who has the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from contract.auth import SignatureError, load_public_key_b64
from server.keys import ServerKey
from server.settings import ServerSettings
from server.tables import AuditEntry, Counter, Event

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
"""prev_hash of the first entry."""
AUDIT_COUNTER = "audit"
INGEST_ACTION = "events.ingest"
KEY_BYTES = 32
"""Length of a generated audit key; a configured key must be at least this long."""
SESSION_INFO_KEY = "audit_key"
"""Where a session carries its audit key (`session.info`, set by server.db.session_factory)."""
CHECKPOINT_KIND = "jifang.audit-checkpoint/1"
_STREAM_ROWS = 1000
_HEAD_ROWS_CHECKED = 16


class AuditKeyError(Exception):
    """The audit key is missing, malformed, or not the one that sealed the chain."""


class CheckpointError(Exception):
    """A checkpoint file is malformed or its signature does not verify."""


class ChainBrokenError(Exception):
    """The chain does not verify, so it is not checkpointed."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"the audit chain does not verify ({len(problems)} problem(s))")
        self.problems = problems


# -- the key ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """The chain's HMAC key, where it came from, and an id that names it without revealing it."""

    secret: bytes = field(repr=False)
    source: str
    key_id: str


def _parse_key(text: str, source: str) -> AuditKey:
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError as err:
        raise AuditKeyError(f"audit key {source}: not hex text") from err
    if len(secret) < KEY_BYTES:
        raise AuditKeyError(
            f"audit key {source}: {len(secret)} bytes, at least {KEY_BYTES} (64 hex characters)"
        )
    return AuditKey(secret, source, hashlib.sha256(secret).hexdigest()[:16])


def load_key(settings: ServerSettings) -> AuditKey:
    """The configured audit key (JIFANG_AUDIT_KEY, else the key file); never creates one."""
    if settings.audit_key is not None:
        return _parse_key(settings.audit_key.get_secret_value(), "JIFANG_AUDIT_KEY")
    path = settings.audit_key_path
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as err:
        raise AuditKeyError(
            f"no audit key: {path} does not exist (set JIFANG_AUDIT_KEY or "
            "JIFANG_AUDIT_KEY_FILE to the key that sealed this database's audit chain)"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise AuditKeyError(f"audit key {path}: cannot be read ({err})") from err
    return _parse_key(text, str(path))


def ensure_key(settings: ServerSettings) -> AuditKey:
    """load_key, first creating the default key file (mode 0600) when no key is configured."""
    path = settings.audit_key_path
    if settings.audit_key is None and settings.audit_key_file is None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(KEY_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        logger.info("created audit key %s", path)
    return load_key(settings)


def session_info(key: AuditKey | None) -> dict[str, Any]:
    """`Session(info=...)` for sessions that append to the chain."""
    return {SESSION_INFO_KEY: key} if key is not None else {}


def session_key(session: Session) -> AuditKey:
    """The audit key the session was made with."""
    key = session.info.get(SESSION_INFO_KEY)
    if not isinstance(key, AuditKey):
        raise AuditKeyError(
            "this database session has no audit key (make sessions with "
            "server.db.session_factory(engine, audit_key))"
        )
    return key


def _mac(key: AuditKey, domain: str, value: Any) -> str:
    message = f"{domain}\n{canonical(value)}".encode()
    return hmac.new(key.secret, message, hashlib.sha256).hexdigest()


def entry_mac(key: AuditKey, seq: int, digest: str) -> str:
    """The seal of one audit row: HMAC over its seq and its hash (which covers the rest)."""
    return _mac(key, "jifang.audit.entry/1", {"seq": seq, "hash": digest})


def _instant(value: datetime) -> str:
    # SQLite hands back naive datetimes; every stored time is UTC.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


def event_content(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Everything a device reported about an event and how it was stored.

    The review state (status, claim) is left out: it changes after ingest, and each change
    is its own audit entry.
    """
    return {
        "event_id": row["event_id"],
        "device_id": row["device_id"],
        "site_id": row["site_id"],
        "seq": int(row["seq"]),
        "kind": row["kind"],
        "reason": row["reason"],
        "severity": row["severity"],
        "flagged": bool(row["flagged"]),
        "occurred_at": _instant(row["occurred_at"]),
        "received_at": _instant(row["received_at"]),
        "body": row["body"],
    }


def event_mac(key: AuditKey, row: Mapping[Any, Any]) -> str:
    """The seal of one event row: its content and the audit row it was stored with."""
    return _mac(
        key,
        "jifang.audit.event/1",
        {"content": event_content(row), "batch_audit_seq": row["batch_audit_seq"]},
    )


def events_digest(rows: Sequence[Mapping[Any, Any]]) -> str:
    """SHA-256 over a batch's event contents (by event id): what its ingest entry records, so
    the hash chain, and a checkpoint of it, covers the events themselves."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: str(r["event_id"])):
        digest.update(canonical(event_content(row)).encode("utf-8") + b"\n")
    return digest.hexdigest()


def seal_events(session: Session, rows: list[dict[str, Any]], batch_audit_seq: int) -> None:
    """Tie event rows about to be inserted to their ingest entry and seal them (`mac`)."""
    key = session_key(session)
    for row in rows:
        row["batch_audit_seq"] = batch_audit_seq
        row["mac"] = event_mac(key, row)


def check_key(session: Session, key: AuditKey) -> None:
    """Refuse a key that sealed none of the latest rows (a replaced or wrong key file)."""
    latest = session.execute(
        select(AuditEntry.seq, AuditEntry.hash, AuditEntry.mac)
        .where(AuditEntry.mac != "")
        .order_by(AuditEntry.seq.desc())
        .limit(_HEAD_ROWS_CHECKED)
    ).all()
    if latest and not any(mac == entry_mac(key, seq, digest) for seq, digest, mac in latest):
        raise AuditKeyError(
            f"the audit key {key.source} (id {key.key_id}) did not seal the latest audit rows "
            f"(up to row {latest[0][0]}): restore the key that did, or check the chain with "
            "`jifang server audit verify`"
        )


# -- appending --------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: the exact text that is hashed or signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def entry_hash(
    seq: int, at: str, actor: str, action: str, target: str, data: str, prev_hash: str
) -> str:
    """SHA-256 of one entry's fields and the previous entry's hash."""
    body = canonical(
        {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "target": target,
            "data": data,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """An entry as plain JSON (what bundles carry; the seal stays on the server)."""
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


def append(session: Session, actor: str, action: str, target: str, data: Any) -> AuditEntry:
    """Append one sealed entry in the caller's transaction (the head row lock orders writers)."""
    key = session_key(session)
    # The UPDATE takes the head row's lock until commit, so concurrent writers chain in
    # commit order instead of forking the chain.
    row = session.execute(
        update(Counter)
        .where(Counter.name == AUDIT_COUNTER)
        .values(value=Counter.value + 1)
        .returning(Counter.value, Counter.text)
    ).one()
    seq, prev = int(row[0]), row[1] or GENESIS
    at = datetime.now(UTC).isoformat(timespec="microseconds")
    data_text = canonical(data)
    digest = entry_hash(seq, at, actor, action, target, data_text, prev)
    entry = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        data=data_text,
        prev_hash=prev,
        hash=digest,
        mac=entry_mac(key, seq, digest),
    )
    session.add(entry)
    session.execute(update(Counter).where(Counter.name == AUDIT_COUNTER).values(text=digest))
    return entry


# -- verifying --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditProblem:
    """One break in the chain, naming the audit row."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit row {self.seq}: {self.problem}"


@dataclass(frozen=True)
class EventProblem:
    """An event row that is not as its audit entry recorded it."""

    event_id: str
    problem: str
    device_id: str | None = None
    device_seq: int | None = None

    def __str__(self) -> str:
        where = f"device {self.device_id}" if self.device_id else ""
        if self.device_seq is not None:
            where += f", seq {self.device_seq}"
        return f"event {self.event_id}" + (f" ({where})" if where else "") + f": {self.problem}"


Problem = AuditProblem | EventProblem

_UNSEALED = (
    "not sealed by the audit key (its MAC is missing or wrong: edited and re-hashed, "
    "or written by someone without the key)"
)


@dataclass(frozen=True)
class Checkpoint:
    """A head the server once signed: row `seq` had `head_hash` and `count` rows led to it."""

    seq: int
    count: int
    head_hash: str
    at: str
    audit_key_id: str


class _ChainWalk:
    """Checks consecutive audit rows: seq gaps, hashes, links and seals."""

    def __init__(self, key: AuditKey, checkpoint: Checkpoint | None) -> None:
        self.key = key
        self.checkpoint = checkpoint
        self.problems: list[Problem] = []
        self.prev_hash = GENESIS
        self.prev_seq = 0
        self.count = 0
        self.hash_at_checkpoint: str | None = None

    def step(self, entry: Mapping[Any, Any]) -> None:
        seq = int(entry["seq"])
        self.count += 1
        if seq > self.prev_seq + 1:
            first, last = self.prev_seq + 1, seq - 1
            missing = f"{first}" if first == last else f"{first}..{last}"
            self.problems.append(AuditProblem(first, f"deleted (rows {missing} are missing)"))
        expected = entry_hash(
            seq,
            entry["at"],
            entry["actor"],
            entry["action"],
            entry["target"],
            entry["data"],
            entry["prev_hash"],
        )
        if expected != entry["hash"]:
            self.problems.append(AuditProblem(seq, "edited (its contents do not match its hash)"))
        elif entry["prev_hash"] != self.prev_hash and seq == self.prev_seq + 1:
            before = f"row {self.prev_seq}" if self.prev_seq else "the chain start"
            self.problems.append(
                AuditProblem(
                    seq,
                    f"inserted or re-linked (its prev_hash is not the hash of {before}; "
                    f"{before} was edited and re-hashed, or this row was put in)",
                )
            )
        if not hmac.compare_digest(entry["mac"] or "", entry_mac(self.key, seq, entry["hash"])):
            self.problems.append(AuditProblem(seq, _UNSEALED))
        if self.checkpoint is not None and seq == self.checkpoint.seq:
            self.hash_at_checkpoint = entry["hash"]
        self.prev_hash = entry["hash"]
        self.prev_seq = seq

    def finish(self, head_seq: int, head_hash: str) -> None:
        """Compare the last row with the recorded head and with the checkpoint."""
        last_seq, last_hash = self.prev_seq, self.prev_hash
        if head_seq > last_seq:
            self.problems.append(
                AuditProblem(last_seq + 1, f"deleted (rows {last_seq + 1}..{head_seq} are missing)")
            )
        elif head_seq < last_seq:
            self.problems.append(
                AuditProblem(head_seq + 1, "inserted (beyond the recorded chain head)")
            )
        elif head_hash != last_hash:
            self.problems.append(
                AuditProblem(last_seq, "edited (does not match the recorded chain head)")
            )
        if self.checkpoint is not None:
            self._against(self.checkpoint, last_seq)

    def _against(self, checkpoint: Checkpoint, last_seq: int) -> None:
        of = f"the checkpoint of {checkpoint.at}"
        if checkpoint.audit_key_id != self.key.key_id:
            self.problems.append(
                AuditProblem(
                    checkpoint.seq,
                    f"{of} was made under audit key {checkpoint.audit_key_id}, "
                    f"this chain is checked with key {self.key.key_id} (the key was replaced)",
                )
            )
        if checkpoint.seq == 0:
            return  # an empty chain was checkpointed: every row since is checked above
        if last_seq < checkpoint.seq:
            self.problems.append(
                AuditProblem(
                    last_seq + 1,
                    f"deleted (rows {last_seq + 1}..{checkpoint.seq} are missing; "
                    f"{of} recorded {checkpoint.count} rows)",
                )
            )
        elif self.hash_at_checkpoint is None:
            self.problems.append(
                AuditProblem(checkpoint.seq, f"deleted ({of} ends the chain at this row)")
            )
        elif self.hash_at_checkpoint != checkpoint.head_hash:
            self.problems.append(
                AuditProblem(
                    checkpoint.seq,
                    f"differs from {of} (the chain up to this row was rewritten: "
                    "edited, rows removed or re-hashed)",
                )
            )


def _event_problem(row: Mapping[Any, Any], problem: str) -> EventProblem:
    return EventProblem(row["event_id"], problem, row["device_id"], int(row["seq"]))


class _EventWalk:
    """Matches the event rows (ordered by their audit row) against the ingest entries."""

    def __init__(self, key: AuditKey, rows: Iterator[Mapping[Any, Any]]) -> None:
        self.key = key
        self.rows = rows
        self.pending = next(rows, None)
        self.problems: list[Problem] = []

    def _take(self, seq: int) -> dict[str, Mapping[Any, Any]]:
        batch: dict[str, Mapping[Any, Any]] = {}
        while self.pending is not None and int(self.pending["batch_audit_seq"]) <= seq:
            row = self.pending
            if int(row["batch_audit_seq"]) < seq:
                self.problems.append(
                    _event_problem(
                        row, f"inserted (its audit row {row['batch_audit_seq']} does not exist)"
                    )
                )
            else:
                batch[row["event_id"]] = row
            self.pending = next(self.rows, None)
        return batch

    def step(self, entry: Mapping[Any, Any]) -> None:
        seq = int(entry["seq"])
        batch = self._take(seq)
        listed, recorded = _ingest_record(entry)
        device = str(entry["target"]).removeprefix("device:")
        found = len(self.problems)
        for event_id in listed:
            if event_id not in batch:
                self.problems.append(
                    EventProblem(event_id, f"deleted (listed by audit row {seq})", device)
                )
        for event_id, row in batch.items():
            if event_id not in listed:
                self.problems.append(
                    _event_problem(row, f"inserted (audit row {seq} does not list it)")
                )
            elif not hmac.compare_digest(row["mac"] or "", event_mac(self.key, row)):
                self.problems.append(
                    _event_problem(
                        row,
                        f"edited (its contents do not match the seal made when audit row "
                        f"{seq} stored it)",
                    )
                )
        intact = len(self.problems) == found
        if intact and recorded is not None and events_digest(list(batch.values())) != recorded:
            self.problems.append(
                AuditProblem(
                    seq,
                    "its events differ from the digest it recorded (events_sha256): "
                    "an event was edited and re-sealed with the audit key",
                )
            )

    def finish(self) -> None:
        self._take(2**63 - 1)


def _ingest_record(entry: Mapping[Any, Any]) -> tuple[set[str], str | None]:
    """The event ids an ingest entry lists and the digest of their contents (None before
    entries recorded one)."""
    if entry["action"] != INGEST_ACTION:
        return set(), None
    try:
        data = json.loads(entry["data"])
    except ValueError:
        return set(), None  # the hash check names the row
    if not isinstance(data, dict):
        return set(), None
    ids = data.get("event_ids", [])
    recorded = data.get("events_sha256")
    return (
        {str(i) for i in ids} if isinstance(ids, list) else set(),
        recorded if isinstance(recorded, str) else None,
    )


def _stream(session: Session, statement: Select[Any]) -> Iterator[Mapping[Any, Any]]:
    result = session.execute(statement.execution_options(yield_per=_STREAM_ROWS))
    for row in result:
        yield row._mapping


def verify(session: Session, checkpoint: Checkpoint | None = None) -> list[Problem]:
    """Walk the whole chain, every event row and the head record; an empty list means intact.

    With a checkpoint, also prove that the chain still holds the head the server signed.
    Rows are streamed, so memory stays flat however long the chain is.
    """
    key = session_key(session)
    chain = _ChainWalk(key, checkpoint)
    entries = _stream(session, select(AuditEntry.__table__).order_by(AuditEntry.seq))
    stored = _stream(
        session,
        select(Event.__table__)
        .where(Event.batch_audit_seq.is_not(None))
        .order_by(Event.batch_audit_seq, Event.event_id),
    )
    events = _EventWalk(key, stored)
    for entry in entries:
        chain.step(entry)
        events.step(entry)
    events.finish()
    head = session.execute(
        select(Counter.value, Counter.text).where(Counter.name == AUDIT_COUNTER)
    ).one()
    chain.finish(int(head[0]), head[1] or GENESIS)
    unchained = session.execute(
        select(Event.__table__).where(Event.batch_audit_seq.is_(None)).order_by(Event.event_id)
    )
    loose = [_event_problem(row._mapping, "inserted (it names no audit row)") for row in unchained]
    return chain.problems + events.problems + loose


def count_query() -> Select[Any]:
    """SELECT the number of entries."""
    return select(func.count()).select_from(AuditEntry)


# -- checkpoints ------------------------------------------------------------------------------


def checkpoint(session: Session, server_key: ServerKey) -> dict[str, Any]:
    """A signed checkpoint of the chain head, after the whole chain verified."""
    problems = verify(session)
    if problems:
        raise ChainBrokenError(problems)
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).one_or_none()
    count = session.execute(count_query()).scalar_one()
    content = {
        "kind": CHECKPOINT_KIND,
        "seq": int(head[0]) if head else 0,
        "count": int(count),
        "head_hash": head[1] if head else GENESIS,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "audit_key_id": session_key(session).key_id,
    }
    signature = server_key.private.sign(canonical(content).encode("utf-8"))
    return {
        "content": content,
        "key_id": server_key.key_id,
        "public_key": server_key.public_b64,
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def read_checkpoint(document: Any, trusted_public_key: str) -> Checkpoint:
    """Check a checkpoint's signature with the server's public key and return its head."""
    try:
        content = document["content"]
        public = load_public_key_b64(trusted_public_key)
        public.verify(
            base64.b64decode(document["signature"], validate=True),
            canonical(content).encode("utf-8"),
        )
    except (KeyError, TypeError, ValueError, InvalidSignature, SignatureError) as err:
        raise CheckpointError(
            f"checkpoint signature does not verify with the server key "
            f"({type(err).__name__} {err})".replace(" )", ")")
        ) from err
    try:
        if content["kind"] != CHECKPOINT_KIND:
            raise ValueError(f"kind {content['kind']!r} is not {CHECKPOINT_KIND}")
        return Checkpoint(
            seq=int(content["seq"]),
            count=int(content["count"]),
            head_hash=str(content["head_hash"]),
            at=str(content["at"]),
            audit_key_id=str(content["audit_key_id"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint content is malformed: {err}") from err
