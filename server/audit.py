"""Hash-chained audit log: every write appends an entry carrying the previous entry's hash."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from server.tables import AuditEntry, Counter

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
"""prev_hash of the first entry."""
AUDIT_COUNTER = "audit"


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
    """An entry as plain JSON (what bundles carry)."""
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
    """Append one entry in the caller's transaction (the head row lock orders writers)."""
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
    )
    session.add(entry)
    session.execute(update(Counter).where(Counter.name == AUDIT_COUNTER).values(text=digest))
    return entry


@dataclass(frozen=True)
class AuditProblem:
    """One break in the chain, naming the row."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit row {self.seq}: {self.problem}"


def verify_entries(entries: list[dict[str, Any]], start_prev: str = GENESIS) -> list[AuditProblem]:
    """Check hashes and links of consecutive entries (also used offline on bundles)."""
    problems: list[AuditProblem] = []
    prev_hash = start_prev
    prev_seq: int | None = None
    for entry in entries:
        seq = int(entry["seq"])
        if prev_seq is not None and seq != prev_seq + 1:
            missing = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
            problems.append(AuditProblem(prev_seq + 1, f"deleted (rows {missing} are missing)"))
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
            problems.append(AuditProblem(seq, "edited (its contents do not match its hash)"))
        elif entry["prev_hash"] != prev_hash and (prev_seq is None or seq == prev_seq + 1):
            before = f"row {prev_seq}" if prev_seq is not None else "the chain start"
            problems.append(
                AuditProblem(
                    seq,
                    f"inserted or re-linked (its prev_hash is not the hash of {before}; "
                    f"{before} was edited and re-hashed, or this row was put in)",
                )
            )
        prev_hash = entry["hash"]
        prev_seq = seq
    return problems


def verify(session: Session) -> list[AuditProblem]:
    """Walk the whole chain and the head record; an empty list means intact."""
    entries = [entry_dict(e) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    problems: list[AuditProblem] = []
    if entries and int(entries[0]["seq"]) != 1:
        problems.append(AuditProblem(1, f"deleted (rows 1..{int(entries[0]['seq']) - 1} missing)"))
    problems += verify_entries(entries)
    head = session.execute(
        select(Counter.value, Counter.text).where(Counter.name == AUDIT_COUNTER)
    ).one()
    last_seq = int(entries[-1]["seq"]) if entries else 0
    last_hash = entries[-1]["hash"] if entries else GENESIS
    head_seq, head_hash = int(head[0]), head[1] or GENESIS
    if head_seq > last_seq:
        problems.append(
            AuditProblem(last_seq + 1, f"deleted (rows {last_seq + 1}..{head_seq} are missing)")
        )
    elif head_seq < last_seq:
        problems.append(AuditProblem(head_seq + 1, "inserted (beyond the recorded chain head)"))
    elif head_hash != last_hash:
        problems.append(AuditProblem(last_seq, "edited (does not match the recorded chain head)"))
    return problems


def count_query() -> Select[Any]:
    """SELECT the number of entries."""
    return select(func.count()).select_from(AuditEntry)
