"""Outbox delivery, shared by the cab and the station agent: batches with retries and backoff."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from contract.messages import EventBatch
from edge_agent.config import AgentConfigBase
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink, UplinkError

logger = logging.getLogger(__name__)


def deliver_once(config: AgentConfigBase, outbox: Outbox, uplink: Uplink) -> int:
    """Send one batch of due events (evidence first); return how many were acknowledged."""
    store = config.store
    outbox.report_notices(config.device.id)  # quarantine notices go out as device.fault events
    for sha, media_type, path in outbox.evidence_due(limit=config.server.batch_size):
        try:
            uplink.put_evidence(sha, path.read_bytes(), media_type)
        except (UplinkError, OSError) as err:
            logger.warning("evidence %s not delivered: %s", sha[:12], err)
            outbox.evidence_failed(sha, store.retry_initial_s, store.retry_max_s)
        else:
            outbox.evidence_acked(sha)
    pending = outbox.due(config.server.batch_size)
    if not pending:
        return 0
    batch = EventBatch(
        device_id=config.device.id,
        sent_at=datetime.now(UTC),
        events=tuple(p.event for p in pending),
    )
    try:
        ack = uplink.post_events(batch)
    except UplinkError as err:
        delay = outbox.mark_failed(
            [p.seq for p in pending], store.retry_initial_s, store.retry_max_s
        )
        logger.warning("%d event(s) not delivered (%s); retry in %.1f s", len(pending), err, delay)
        return 0
    acked = outbox.mark_acked(ack)
    sent = {p.event_id for p in pending}
    missing = sent - {str(i) for i in (*ack.accepted, *ack.duplicates)}
    if missing:
        # The server neither took nor recognised them: retry later rather than lose them.
        seqs = [p.seq for p in pending if p.event_id in missing]
        outbox.mark_failed(seqs, store.retry_initial_s, store.retry_max_s)
    if ack.gaps:
        logger.warning("server reports sequence gaps: %s", ack.gaps)
    return acked


def run_delivery(
    config: AgentConfigBase, stop_event: threading.Event, outbox: Outbox, uplink: Uplink
) -> None:
    """Named worker: deliver until stopped; idle polls at retry_initial_s."""
    while not stop_event.is_set():
        try:
            sent = deliver_once(config, outbox, uplink)
            outbox.prune_evidence(
                config.store.evidence_retention_days * 86_400.0,
                config.store.evidence_max_mb * 1024 * 1024,
            )
            outbox.purge_delivered(config.store.delivered_keep_days * 86_400.0)
        except Exception:  # the worker must survive anything; the events stay in SQLite
            logger.exception("delivery loop error")
            sent = 0
        if not sent:
            stop_event.wait(config.store.retry_initial_s)
