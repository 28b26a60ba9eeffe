"""The cab gate state machine: LOCKED -> VERIFYING -> AUTHORIZED -> RUNNING -> LOCKED.

Safety: the agent gates START only. Nothing here ever opens the enable output because of a
re-verification; a running machine is never cut (that belongs to its own safety system).
Driver change and prolonged absence raise the local alarm output and a flagged event.
Every decision commits its event to the outbox before the outputs change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from contract.codes import GateState, ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    CabDecisionEvent,
    CabDecisionPayload,
    CabOverrideEvent,
    CabOverridePayload,
    CabReverifyEvent,
    CabReverifyPayload,
    ClaimInfo,
    DeviceFaultEvent,
    DeviceFaultPayload,
    EvidenceRef,
    MatchInfo,
)
from edge_agent.cab.cache import GalleryCache
from edge_agent.cab.gate import FrameFeed, Verifier, on_scale
from edge_agent.cab.interlock import Interlock, InterlockError
from edge_agent.cab.override import redeem_code
from edge_agent.cab.types import Decision, GateFault
from edge_agent.config import CabAgentConfig
from edge_agent.outbox import Outbox
from models.matching import fuse_embeddings

logger = logging.getLogger(__name__)

_SEVERITY: dict[ReasonCode, Severity] = {
    ReasonCode.AUTHORIZED: Severity.INFO,
    ReasonCode.REVERIFIED: Severity.INFO,
    ReasonCode.ENGINE_STOPPED: Severity.INFO,
    ReasonCode.NO_FACE: Severity.LOW,
    ReasonCode.LOW_QUALITY: Severity.LOW,
    ReasonCode.CLAIM_REQUIRED: Severity.LOW,
    ReasonCode.OPERATOR_ABSENT: Severity.MEDIUM,
    ReasonCode.DRIVER_CHANGED: Severity.HIGH,
    ReasonCode.OVERRIDE: Severity.HIGH,
    ReasonCode.CLAIM_MISMATCH: Severity.HIGH,
    ReasonCode.LIVENESS_FAILED: Severity.HIGH,
    ReasonCode.INTERNAL_ERROR: Severity.HIGH,
    ReasonCode.CAMERA_LOST: Severity.HIGH,
    ReasonCode.MODEL_MISSING: Severity.HIGH,
    ReasonCode.GALLERY_INVALID: Severity.HIGH,
    ReasonCode.GALLERY_STALE: Severity.HIGH,
    ReasonCode.CLOCK_UNTRUSTED: Severity.HIGH,
}


def severity_of(reason: ReasonCode) -> Severity:
    """How urgently a supervisor should look at this reason (refusals default to MEDIUM)."""
    return _SEVERITY.get(reason, Severity.MEDIUM)


class ClockGuard:
    """Whether the local clock can be trusted to judge certificate dates and gallery age."""

    def __init__(self, config: CabAgentConfig, now: Callable[[], datetime] | None = None) -> None:
        self.gate = config.gate
        self._now = now or (lambda: datetime.now(UTC))
        self.server_skew_s: float | None = None

    def use_source(self, now: Callable[[], datetime]) -> None:
        """Read the time from `now` from here on (a simulated clock in the demo)."""
        self._now = now

    def observe_server(self, server_time: datetime) -> None:
        """Record the skew against the server's clock (from a response's Date header)."""
        self.server_skew_s = (self._now() - server_time).total_seconds()

    def now(self, signed_not_before: datetime | None = None) -> datetime:
        """The current UTC time, or GateFault(CLOCK_UNTRUSTED)."""
        now = self._now()
        if now.date() < self.gate.clock_not_before:
            raise GateFault(
                ReasonCode.CLOCK_UNTRUSTED,
                f"local date {now.date()} is before {self.gate.clock_not_before}: clock was reset",
            )
        if self.server_skew_s is not None and abs(self.server_skew_s) > self.gate.max_clock_skew_s:
            raise GateFault(
                ReasonCode.CLOCK_UNTRUSTED,
                f"local clock differs from the server's by {self.server_skew_s:.0f} s",
            )
        slack = self.gate.max_clock_skew_s
        if signed_not_before is not None and (signed_not_before - now).total_seconds() > slack:
            raise GateFault(
                ReasonCode.CLOCK_UNTRUSTED,
                f"local clock {now.isoformat()} is behind the signed gallery's time "
                f"{signed_not_before.isoformat()}",
            )
        return now


@dataclass
class Status:
    """What the local status endpoint shows."""

    state: GateState = GateState.LOCKED
    enable: bool = False
    alarm: bool = False
    indication: str = "locked"
    operator_id: str | None = None
    last_decision: Decision | None = None
    last_decision_at: datetime | None = None


class CabGate:
    """Owns the gate state, the outputs and the events; thread-safe."""

    def __init__(
        self,
        config: CabAgentConfig,
        verifier: Verifier | None,
        cache: GalleryCache,
        outbox: Outbox,
        interlock: Interlock,
        clock: ClockGuard,
        pack_contract_id: str = "",
        model_fault: GateFault | None = None,
        evidence_dir: str | None = None,
    ) -> None:
        self.config = config
        self.verifier = verifier
        self.cache = cache
        self.outbox = outbox
        self.interlock = interlock
        self.clock = clock
        self.pack_contract_id = pack_contract_id
        self.model_fault = model_fault
        self.evidence_dir = evidence_dir
        self.status = Status()
        self.decisions: dict[str, int] = {}
        self._lock = threading.RLock()
        self._authorized_at = 0.0
        self._last_seen = 0.0
        self._absent_flagged = False
        self._zone = ZoneInfo(config.device.timezone)
        self._outputs(enable=False, alarm=False)

    # --- outputs and events -----------------------------------------------------------

    def _outputs(self, enable: bool, alarm: bool) -> None:
        try:
            self.interlock.set_outputs(enable=enable, alarm=alarm)
        except InterlockError as err:
            logger.error("interlock: %s", err)
            if enable:
                # Could not close the enable output: the machine cannot start; say so.
                raise GateFault(ReasonCode.INTERNAL_ERROR, f"interlock: {err}") from err
        self.status.enable, self.status.alarm = enable, alarm

    def _evidence(self, decision: Decision) -> tuple[EvidenceRef, ...]:
        if decision.evidence_jpeg is None or self.evidence_dir is None:
            return ()
        sha = self.outbox.add_evidence(
            Path(self.evidence_dir), decision.evidence_jpeg, "image/jpeg"
        )
        return (EvidenceRef(sha256=sha, media_type="image/jpeg", role="face"),)

    def _event_common(
        self, reason: ReasonCode, evidence: tuple[EvidenceRef, ...] = ()
    ) -> dict[str, object]:
        return {
            "event_id": uuid7(),
            "device_id": self.config.device.id,
            "occurred_at": datetime.now(UTC),
            "reason": reason,
            "severity": severity_of(reason),
            "evidence": evidence,
        }

    def _record_decision(self, decision: Decision, state_to: GateState) -> None:
        evidence = self._evidence(decision)
        payload = CabDecisionPayload(
            decision="authorized" if decision.reason == ReasonCode.AUTHORIZED else "denied",
            state_from=GateState.VERIFYING,
            state_to=state_to,
            frames_used=decision.frames_used,
            match=decision.match,
            liveness_score=decision.liveness_score,
            liveness_by=decision.liveness_by,
            claim=decision.claim,
            pack_contract_id=self.pack_contract_id,
            detail=decision.detail[:1024],
        )
        common = self._event_common(decision.reason, evidence)
        self.outbox.append(lambda seq: CabDecisionEvent(seq=seq, payload=payload, **common))

    def record_fault(
        self, component: str, reason: ReasonCode, message: str, recovered: bool = False
    ) -> None:
        """A device.fault event (camera, model, gallery, clock, interlock)."""
        payload = DeviceFaultPayload(
            component=component, message=message[:1024], recovered=recovered
        )
        common = self._event_common(reason)
        if recovered:
            common["severity"] = Severity.INFO
        self.outbox.append(lambda seq: DeviceFaultEvent(seq=seq, payload=payload, **common))

    # --- transitions --------------------------------------------------------------------

    def _decide(self, feed: FrameFeed, claim: ClaimInfo | None) -> Decision:
        if self.model_fault is not None:
            raise self.model_fault
        if self.verifier is None:
            raise GateFault(ReasonCode.MODEL_MISSING, "no face engine loaded")
        signed = self.cache.gallery.generated_at if self.cache.gallery else None
        now = self.clock.now(signed)
        gallery, device_config = self.cache.require(now, self.config.gate.max_gallery_age_s)
        today = now.astimezone(self._zone).date()
        return self.verifier.decide(feed, gallery, device_config, today, claim)

    def request_start(self, feed: FrameFeed, claim: ClaimInfo | None = None) -> Decision:
        """A start request (ignition, seat switch or presence): verify and open or stay locked."""
        with self._lock:
            if self.status.state != GateState.LOCKED:
                return self.status.last_decision or Decision(ReasonCode.INTERNAL_ERROR, "busy")
            self.status.state = GateState.VERIFYING
            self.status.indication = "verifying"
            try:
                decision = self._decide(feed, claim)
            except GateFault as fault:
                decision = Decision(fault.reason, fault.detail, claim=claim)
            except Exception as err:  # fail closed on anything unexpected
                logger.exception("gate decision failed")
                decision = Decision(
                    ReasonCode.INTERNAL_ERROR, f"{type(err).__name__}: {err}", claim=claim
                )
            return self._conclude(decision)

    def _conclude(self, decision: Decision) -> Decision:
        authorized = decision.reason == ReasonCode.AUTHORIZED
        state_to = GateState.AUTHORIZED if authorized else GateState.LOCKED
        try:
            self._record_decision(decision, state_to)
            self._outputs(enable=authorized, alarm=False)
        except Exception as err:
            # Not recorded or not driven: the start stays locked, and that refusal is recorded.
            reason = err.reason if isinstance(err, GateFault) else ReasonCode.INTERNAL_ERROR
            detail = err.detail if isinstance(err, GateFault) else f"{type(err).__name__}: {err}"
            logger.error("decision could not be carried out: %s", detail)
            decision = Decision(reason, detail, claim=decision.claim)
            state_to = GateState.LOCKED
            self._outputs(enable=False, alarm=False)
            try:
                self._record_decision(decision, state_to)
            except Exception:
                logger.exception("could not record the refusal either")
        self._finish(decision, state_to)
        return decision

    def _finish(self, decision: Decision, state_to: GateState) -> None:
        self.status.state = state_to
        self.status.operator_id = decision.operator_id if decision.authorized else None
        self.status.last_decision = decision
        self.status.last_decision_at = datetime.now(UTC)
        self.status.indication = (
            "start enabled" if decision.authorized else f"denied: {decision.reason.value}"
        )
        self.decisions[decision.reason.value] = self.decisions.get(decision.reason.value, 0) + 1
        self._authorized_at = time.monotonic()
        self._last_seen = time.monotonic()
        self._absent_flagged = False
        log = logger.info if decision.authorized else logger.warning
        log("decision %s (%s)", decision.reason.value, decision.detail)

    def override(self, code: str, cause: str = "") -> Decision:
        """Emergency start without a face: a valid one-time code for this device; always flagged."""
        with self._lock:
            if self.status.state != GateState.LOCKED:
                return Decision(ReasonCode.INTERNAL_ERROR, "override only from LOCKED")
            key = self.config.server.device_key.get_secret_value().encode()
            try:
                now = self.clock.now()
                used = (
                    redeem_code(
                        code,
                        key,
                        self.config.device.id,
                        now,
                        self.config.override.max_validity_s,
                        self.outbox,
                    )
                    if self.config.override.enabled
                    else None
                )
            except GateFault as fault:
                logger.warning("override refused: %s", fault.detail)
                self.status.indication = f"override refused: {fault.detail}"
                return Decision(fault.reason, f"refused: {fault.detail}")
            if used is None:
                return Decision(ReasonCode.OVERRIDE, "refused: overrides are disabled")
            payload = CabOverridePayload(
                code_id=used.code_id, expires_at=used.expires_at, cause=cause[:256]
            )
            common = self._event_common(ReasonCode.OVERRIDE)
            self.outbox.append(lambda seq: CabOverrideEvent(seq=seq, payload=payload, **common))
            decision = Decision(
                ReasonCode.OVERRIDE, f"override code {used.code_id}", override_granted=True
            )
            self._outputs(enable=True, alarm=False)
            self._finish(decision, GateState.AUTHORIZED)
            return decision

    def engine_started(self) -> None:
        """The engine runs: AUTHORIZED -> RUNNING (a start without authorization is flagged)."""
        with self._lock:
            if self.status.state == GateState.AUTHORIZED:
                self.status.state = GateState.RUNNING
                self.status.indication = "running"
                self._last_seen = time.monotonic()
            elif self.status.state != GateState.RUNNING:
                logger.error("engine runs without authorization (state %s)", self.status.state)
                self.record_fault(
                    "interlock",
                    ReasonCode.INTERNAL_ERROR,
                    "engine started while the gate was locked",
                )

    def engine_stopped(self) -> None:
        """The engine stopped: back to LOCKED, outputs open."""
        with self._lock:
            if self.status.state in (GateState.RUNNING, GateState.AUTHORIZED):
                expected = self.status.operator_id
                common = self._event_common(ReasonCode.ENGINE_STOPPED)
                payload = CabReverifyPayload(expected_operator_id=expected)
                self.outbox.append(lambda seq: CabReverifyEvent(seq=seq, payload=payload, **common))
            self.status.state = GateState.LOCKED
            self.status.operator_id = None
            self.status.indication = "locked"
            self._outputs(enable=False, alarm=False)

    def shutdown(self) -> None:
        """The agent is stopping: outputs open, no event (the engine has not stopped)."""
        with self._lock:
            logger.info("agent stopping in state %s: outputs opened", self.status.state.value)
            self.status.state = GateState.LOCKED
            self.status.operator_id = None
            self.status.indication = "agent stopped"
            self._outputs(enable=False, alarm=False)

    def tick(self) -> None:
        """Lapse an authorization that was not used within gate.authorized_hold_s."""
        with self._lock:
            if (
                self.status.state == GateState.AUTHORIZED
                and time.monotonic() - self._authorized_at > self.config.gate.authorized_hold_s
            ):
                logger.info("authorization lapsed unused")
                self.status.state = GateState.LOCKED
                self.status.operator_id = None
                self.status.indication = "locked"
                self._outputs(enable=False, alarm=False)

    def reverify(self, feed: FrameFeed) -> ReasonCode | None:
        """While RUNNING: check the operator is still there and the same; alarm, never cut."""
        with self._lock:
            if self.status.state != GateState.RUNNING or self.verifier is None:
                return None
            gate = self.config.gate
            try:
                got = self.verifier.collect(feed, gate.reverify_attempt_s, 1)
            except GateFault as fault:
                self.status.indication = f"running; {fault.reason.value}"
                return fault.reason
            expected = self.status.operator_id
            if not got.good:
                absent = time.monotonic() - self._last_seen
                if absent > gate.absence_timeout_s and not self._absent_flagged:
                    self._absent_flagged = True
                    self._reverify_event(ReasonCode.OPERATOR_ABSENT, expected, None, absent)
                    self._outputs(enable=self.status.enable, alarm=True)
                    self.status.indication = "running; operator absent"
                    return ReasonCode.OPERATOR_ABSENT
                return None
            probe = fuse_embeddings([g.embedding for g in got.good if g.embedding is not None])
            observed, same = self._observe(probe, expected)
            if same or expected is None:
                self._last_seen = time.monotonic()
                if self.status.alarm:
                    self._reverify_event(ReasonCode.REVERIFIED, expected, observed, 0.0)
                    self._outputs(enable=self.status.enable, alarm=False)
                self._absent_flagged = False
                self.status.indication = "running"
                return ReasonCode.REVERIFIED
            self._reverify_event(ReasonCode.DRIVER_CHANGED, expected, observed, 0.0)
            self._outputs(enable=self.status.enable, alarm=True)
            self.status.indication = "running; driver changed"
            return ReasonCode.DRIVER_CHANGED

    def _observe(self, probe: np.ndarray, expected: str | None) -> tuple[MatchInfo | None, bool]:
        gallery = self.cache.gallery
        assert self.verifier is not None
        threshold = self.verifier.policy.threshold
        scorer = self.verifier.policy.scorer
        if gallery is None:
            return None, False
        if expected is not None and len(gallery.operator_templates(expected)):
            score = scorer.claim(gallery.index(), expected, probe)
            if score >= threshold:
                info = MatchInfo(
                    operator_id=expected,
                    score=on_scale(score, scorer),
                    threshold=threshold,
                    margin=0.0,
                    score_kind=scorer.kind,
                )
                return info, True
        best = scorer.search(gallery.index(), probe, k=1).best
        if best is None:
            return None, False
        info = MatchInfo(
            operator_id=best.label,
            score=on_scale(best.score, scorer),
            threshold=threshold,
            margin=0.0,
            score_kind=scorer.kind,
        )
        return info, False

    def _reverify_event(
        self, reason: ReasonCode, expected: str | None, observed: MatchInfo | None, absent_s: float
    ) -> None:
        payload = CabReverifyPayload(
            expected_operator_id=expected, observed=observed, absent_s=absent_s
        )
        common = self._event_common(reason)
        self.outbox.append(lambda seq: CabReverifyEvent(seq=seq, payload=payload, **common))
        logger.warning("re-verification: %s (expected %s)", reason.value, expected)
