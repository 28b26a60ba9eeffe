"""Signed event bundles: an event, its evidence, decisions and audit entries, checkable offline."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy.orm import Session

from contract.auth import load_public_key_b64
from server import audit, incidents, review
from server.keys import ServerKey
from server.tables import Event

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "jifang.event-bundle/1"


class BundleError(Exception):
    """A bundle is missing, malformed or fails verification."""


def evidence_path(evidence_dir: Path, sha256: str) -> Path:
    """Where an evidence image lives on disk (two-level fan-out by hash)."""
    return evidence_dir / sha256[:2] / sha256


def build(session: Session, event_id: str, evidence_dir: Path, key: ServerKey) -> dict[str, Any]:
    """The signed bundle of one event."""
    event = session.get(Event, event_id)
    if event is None:
        raise BundleError(f"no event {event_id}")
    # A violation's bundle carries its incident: the fill folded into it, its evidence, and its
    # decisions (made before the two were linked), which count for the item as well.
    covered = incidents.covered_fills(session, event)
    evidence = []
    seen: set[str] = set()
    for ref in (r for e in (event, *covered) for r in e.body.get("evidence", [])):
        if ref["sha256"] in seen:
            continue
        seen.add(ref["sha256"])
        path = evidence_path(evidence_dir, ref["sha256"])
        evidence.append(
            {
                **ref,
                "data_b64": base64.b64encode(path.read_bytes()).decode() if path.exists() else None,
            }
        )
    decisions = [
        {
            "id": d.id,
            "event_id": d.event_id,
            "user_id": d.user_id,
            "outcome": d.outcome,
            "comment": d.comment,
            "supersedes": d.supersedes,
            "decided_at": d.decided_at.isoformat(),
        }
        for d in review.decisions(session, event)
    ]
    entries = review.audit_entries(session, event)
    content = {
        "format": BUNDLE_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "event": event.body,
        "server_view": {
            "device_id": event.device_id,
            "site_id": event.site_id,
            "severity": event.severity,
            "flagged": event.flagged,
            "received_at": event.received_at.isoformat(),
            "review_status": event.review_status,
        },
        "evidence": evidence,
        "covers": [f.body for f in covered],
        "decisions": decisions,
        "audit_entries": [audit.entry_dict(e) for e in entries],
    }
    signature = key.private.sign(audit.canonical(content).encode("utf-8"))
    return {
        "content": content,
        "key_id": key.key_id,
        "public_key": key.public_b64,
        "signature": base64.b64encode(signature).decode(),
    }


def verify(bundle: dict[str, Any], trusted_public_key: str | None = None) -> list[str]:
    """Problems found in a bundle (empty when it verifies); needs no server or database."""
    problems: list[str] = []
    try:
        content = bundle["content"]
        public = load_public_key_b64(trusted_public_key or bundle["public_key"])
        public.verify(
            base64.b64decode(bundle["signature"]), audit.canonical(content).encode("utf-8")
        )
    except (KeyError, TypeError, ValueError, InvalidSignature) as err:
        return [f"signature does not verify: {type(err).__name__} {err}".strip()]
    for item in content.get("evidence", []):
        if item.get("data_b64") is None:
            problems.append(f"evidence {item['sha256']}: not included (never uploaded)")
            continue
        data = base64.b64decode(item["data_b64"])
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            problems.append(f"evidence {item['sha256']}: content does not match its hash")
    for entry in content.get("audit_entries", []):
        recomputed = audit.entry_hash(
            entry["seq"],
            entry["at"],
            entry["actor"],
            entry["action"],
            entry["target"],
            entry["data"],
            entry["prev_hash"],
        )
        if recomputed != entry["hash"]:
            problems.append(f"audit row {entry['seq']}: contents do not match its hash")
    event_id = content.get("event", {}).get("event_id")
    ingest = [e for e in content.get("audit_entries", []) if e["action"] == "events.ingest"]
    if ingest and not any(event_id in json.loads(e["data"]).get("event_ids", []) for e in ingest):
        problems.append("the ingest audit entry does not list the event")
    return problems
