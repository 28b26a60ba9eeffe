"""Station events on the wire: built with UUIDv7 ids and a per-device sequence, handed to a sink."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from contract.codes import ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    EvidenceRef,
    StationFillEvent,
    StationFillPayload,
    StationViolationEvent,
    StationViolationPayload,
)

logger = logging.getLogger(__name__)

StationEvent = StationFillEvent | StationViolationEvent

SEVERITY: dict[ReasonCode, Severity] = {
    ReasonCode.UNREGISTERED_CYLINDER: Severity.HIGH,
    ReasonCode.FOREIGN_CYLINDER: Severity.HIGH,
    ReasonCode.INSPECTION_OVERDUE: Severity.HIGH,
    ReasonCode.CYLINDER_SCRAPPED: Severity.CRITICAL,
    ReasonCode.BEYOND_DESIGN_LIFE: Severity.CRITICAL,
    ReasonCode.UNCERTIFIED_FILLER: Severity.HIGH,
    ReasonCode.UNSCANNED_FILL: Severity.CRITICAL,
    ReasonCode.DUPLICATE_FILL: Severity.HIGH,
    ReasonCode.SWAPPED_CODE: Severity.CRITICAL,
    ReasonCode.OVERFILL: Severity.CRITICAL,
    ReasonCode.FILLER_ABSENT: Severity.MEDIUM,
}
"""Why these levels: anything that lets an unchecked or overfilled cylinder leave is critical."""


class EventSink(Protocol):
    """Where events go (the agent's outbox implements this)."""

    def put(self, event: StationEvent) -> None:
        """Store the event durably or raise."""
        ...


class EvidenceSource(Protocol):
    """Evidence images of a flagged event (edge_agent.station.evidence.EvidenceRecorder)."""

    def for_scale(
        self, at: float, scale_id: str, wall: Callable[[float], datetime]
    ) -> tuple[EvidenceRef, ...]:
        """The refs for an event at `scale_id` at agent time `at`; empty when none."""
        ...


class MemorySink:
    """Keeps events in a list (tests, the simulator, the bench)."""

    def __init__(self) -> None:
        self.events: list[StationEvent] = []
        self._lock = threading.Lock()

    def put(self, event: StationEvent) -> None:
        """Append the event."""
        with self._lock:
            self.events.append(event)

    def violations(self) -> list[StationViolationEvent]:
        """The violation events so far."""
        with self._lock:
            return [e for e in self.events if isinstance(e, StationViolationEvent)]

    def fills(self) -> list[StationFillEvent]:
        """The fill events so far."""
        with self._lock:
            return [e for e in self.events if isinstance(e, StationFillEvent)]


class EventFactory:
    """Builds station events for one device; `seq` increases by one per event.

    Flagged events (every violation, and a fill that ends with a violation reason) carry the
    evidence images of `evidence`, when given.
    """

    def __init__(
        self,
        device_id: str,
        sink: EventSink,
        wall_clock: Callable[[float], datetime] | None = None,
        evidence: EvidenceSource | None = None,
    ) -> None:
        self._device_id = device_id
        self._sink = sink
        self._evidence = evidence
        self._seq = 0
        self._lock = threading.Lock()
        self._wall = wall_clock or (lambda t: datetime.fromtimestamp(t, UTC))

    def to_datetime(self, at: float) -> datetime:
        """Convert an agent timestamp (seconds) to an aware UTC datetime."""
        return self._wall(at)

    def _next(self) -> int:
        with self._lock:
            seq = self._seq
            self._seq += 1
            return seq

    def _evidence_for(self, at: float, scale_id: str) -> tuple[EvidenceRef, ...]:
        if self._evidence is None:
            return ()
        try:
            return self._evidence.for_scale(at, scale_id, self.to_datetime)
        except Exception:  # the violation must never be lost because its image failed
            logger.exception("evidence for scale %s failed; the event goes without it", scale_id)
            return ()

    def fill(self, at: float, reason: ReasonCode, payload: StationFillPayload) -> StationFillEvent:
        """Emit a fill event (with evidence when it ends with a violation reason)."""
        flagged = reason != ReasonCode.FILL_OK
        event = StationFillEvent(
            event_id=uuid7(),
            device_id=self._device_id,
            seq=self._next(),
            occurred_at=self.to_datetime(at),
            reason=reason,
            severity=SEVERITY.get(reason, Severity.HIGH) if flagged else Severity.INFO,
            evidence=self._evidence_for(at, payload.scale_id) if flagged else (),
            payload=payload,
        )
        self._sink.put(event)
        return event

    def violation(
        self, at: float, reason: ReasonCode, payload: StationViolationPayload
    ) -> StationViolationEvent:
        """Emit a violation event with its evidence."""
        evidence = self._evidence_for(at, payload.scale_id)
        event = StationViolationEvent(
            event_id=uuid7(),
            device_id=self._device_id,
            seq=self._next(),
            occurred_at=self.to_datetime(at),
            reason=reason,
            severity=SEVERITY.get(reason, Severity.HIGH),
            evidence=evidence,
            payload=payload,
        )
        self._sink.put(event)
        return event
