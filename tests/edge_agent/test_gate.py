"""The cab gate decides with real ONNX sessions on real photos; each case gives its event."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from contract.codes import (
    CertificateStatus,
    ClaimKind,
    EventKind,
    GateState,
    LivenessCheck,
    ReasonCode,
)
from contract.messages import CategoryRule, ClaimInfo
from edge_agent.cab.sources import ReplayFeed
from tests.edge_agent.conftest import TODAY, astro_operator, camera_operator, cert


def _events(parts):
    return [parts.outbox.parse(p) for p in parts.outbox.due(100)]


def _last_decision(parts):
    decisions = [e for e in _events(parts) if e.kind == EventKind.CAB_DECISION]
    return decisions[-1]


def test_authorized_closes_enable_and_records_event(make_gate, frames) -> None:
    parts = make_gate()
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert parts.gate.status.state == GateState.AUTHORIZED
    assert parts.interlock.read()["enable"] is True
    event = _last_decision(parts)
    assert event.reason == ReasonCode.AUTHORIZED
    assert event.payload.decision == "authorized"
    assert event.payload.match.operator_id == "op-astro"
    assert event.payload.match.certificate_no == "TS-ASTRO-1"
    assert event.payload.match.score >= event.payload.match.threshold
    assert event.payload.frames_used == 3
    assert event.payload.liveness_score is None  # no liveness check is performed
    assert event.payload.liveness_by == LivenessCheck.NONE
    assert event.evidence and event.evidence[0].media_type == "image/jpeg"


def test_unknown_person_is_no_match(make_gate, frames) -> None:
    parts = make_gate()
    decision = parts.gate.request_start(ReplayFeed(frames["cam"], fps=10))
    assert decision.reason == ReasonCode.NO_MATCH
    assert parts.interlock.read()["enable"] is False
    assert parts.gate.status.state == GateState.LOCKED
    event = _last_decision(parts)
    assert event.reason == ReasonCode.NO_MATCH and event.payload.decision == "denied"
    assert event.payload.match.score < event.payload.match.threshold


def test_expired_certificate(make_gate, frames, signer) -> None:
    expired = cert("TS-ASTRO-1", expires=TODAY - timedelta(days=1))
    parts = make_gate(snapshot=signer.snapshot([astro_operator(expired)]))
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.CERT_EXPIRED
    )
    assert _last_decision(parts).reason == ReasonCode.CERT_EXPIRED
    assert parts.interlock.read()["enable"] is False


def test_revoked_certificate(make_gate, frames, signer) -> None:
    revoked = cert("TS-ASTRO-1", status=CertificateStatus.REVOKED)
    parts = make_gate(snapshot=signer.snapshot([astro_operator(revoked)]))
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.CERT_REVOKED
    )


def test_wrong_category(make_gate, frames, signer) -> None:
    parts = make_gate(device_config=signer.config((CategoryRule(category="Q2"),)))
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.WRONG_CATEGORY
    assert _last_decision(parts).reason == ReasonCode.WRONG_CATEGORY


def test_scope_restriction_refuses_other_scope(make_gate, frames, signer) -> None:
    rule = CategoryRule(category="N1", scope="叉车")
    parts = make_gate(device_config=signer.config((rule,)))
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.WRONG_CATEGORY
    )


def test_no_face(make_gate, frames) -> None:
    parts = make_gate(gate={"window_s": 1.0})
    decision = parts.gate.request_start(ReplayFeed(frames["blank"], fps=5))
    assert decision.reason == ReasonCode.NO_FACE
    assert _last_decision(parts).payload.frames_used == 0


def test_low_quality(make_gate, frames) -> None:
    parts = make_gate(gate={"window_s": 1.0}, quality={"min_face_px": 400})
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=5)).reason
        == ReasonCode.LOW_QUALITY
    )


def test_stale_gallery(make_gate, frames, signer) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    parts = make_gate(snapshot=signer.snapshot(generated_at=old))
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.GALLERY_STALE
    assert _last_decision(parts).reason == ReasonCode.GALLERY_STALE
    assert parts.interlock.read()["enable"] is False


def test_camera_lost_with_real_capture(make_gate, tmp_path) -> None:
    from edge_agent.cab.sources import CaptureWorker, QueueFeed

    parts = make_gate()
    (tmp_path / "frames").mkdir()  # an empty folder: the source opens but never gives a frame
    worker = CaptureWorker(parts.config.camera, threading.Event()).start()
    try:
        decision = parts.gate.request_start(QueueFeed(worker))
    finally:
        worker.stop_event.set()
    assert decision.reason == ReasonCode.CAMERA_LOST
    assert worker.reconnects >= 1
    assert _last_decision(parts).reason == ReasonCode.CAMERA_LOST


def test_ambiguous_when_two_operators_are_close(make_gate, frames, signer) -> None:
    parts = make_gate(
        snapshot=signer.snapshot(
            [astro_operator(), camera_operator()], with_cameraman_template=True
        ),
        gate={"min_margin": 0.5},
        claims={"max_1n_risk": 0.01},
    )
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.AMBIGUOUS_MATCH
    )


def test_bad_signature_is_gallery_invalid(make_gate, frames, signer) -> None:
    good = signer.snapshot()
    forged = good.model_copy(update={"payload": good.payload.replace('"version":1', '"version":2')})
    parts = make_gate(snapshot=False)
    from edge_agent.cab.types import GateFault

    with pytest.raises(GateFault) as caught:
        parts.cache.install_snapshot(forged)
    assert caught.value.reason == ReasonCode.GALLERY_INVALID
    assert parts.cache.gallery is None
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.GALLERY_INVALID
    )


def test_corrupt_gallery_file_on_restart_is_gallery_invalid(make_gate, frames, tmp_path) -> None:
    from edge_agent.cab.agent import build_gate

    parts = make_gate()
    path = parts.config.store.dir / "gallery.envelopes.json"
    path.write_text(path.read_text().replace("op-astro", "op-astrX", 1))
    again = build_gate(parts.config, engine=parts.engine, calibrations=_calibrations(parts))
    try:
        assert again.cache.gallery is None
        assert (
            again.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
            == ReasonCode.GALLERY_INVALID
        )
        faults = [e for e in _events(again) if e.kind == EventKind.DEVICE_FAULT]
        assert faults and faults[0].reason == ReasonCode.GALLERY_INVALID
    finally:
        again.close()


def _calibrations(parts):
    from models.manifest import CalibrationBlock

    policy = parts.gate.verifier.policy
    from models.manifest import Calibration

    return CalibrationBlock(
        calibrations={
            "test": Calibration(
                threshold=policy.threshold,
                target_fmr=1e-3,
                genuine_pairs=2000,
                impostor_pairs=200_000,
                contract_id=parts.gate.pack_contract_id,
            )
        }
    )


def test_gallery_for_another_device_or_contract_is_refused(make_gate, signer) -> None:
    from edge_agent.cab.types import GateFault

    parts = make_gate(snapshot=False)
    with pytest.raises(GateFault, match="device"):
        parts.cache.install_snapshot(signer.snapshot(device_id="FL-9999"))


def test_untrusted_clock(make_gate, frames) -> None:
    parts = make_gate()
    parts.gate.clock.observe_server(datetime.now(UTC) + timedelta(hours=2))
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.CLOCK_UNTRUSTED
    )


def test_model_missing(tmp_path, signer) -> None:
    from edge_agent.cab.agent import build_gate
    from edge_agent.config import parse_config
    from tests.edge_agent.conftest import base_config

    config = parse_config(
        base_config(tmp_path, signer.public_b64, models={"dir": str(tmp_path / "nothing")})
    )
    parts = build_gate(config)
    try:
        decision = parts.gate.request_start(ReplayFeed([b"x"], fps=1))  # type: ignore[list-item]
        assert decision.reason == ReasonCode.MODEL_MISSING
        assert parts.interlock.read()["enable"] is False
    finally:
        parts.close()


def test_any_exception_is_internal_error_deny(make_gate) -> None:
    class Broken:
        def next_frame(self, timeout_s: float):
            raise RuntimeError("decoder crashed")

    parts = make_gate()
    decision = parts.gate.request_start(Broken())
    assert decision.reason == ReasonCode.INTERNAL_ERROR
    assert parts.interlock.read()["enable"] is False
    assert _last_decision(parts).reason == ReasonCode.INTERNAL_ERROR


def test_reverify_driver_change_alarms_but_never_cuts(make_gate, frames, signer) -> None:
    parts = make_gate(
        snapshot=signer.snapshot(
            [astro_operator(), camera_operator()], with_cameraman_template=True
        )
    )
    gate = parts.gate
    assert gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason == ReasonCode.AUTHORIZED
    gate.engine_started()
    assert gate.status.state == GateState.RUNNING
    assert gate.reverify(ReplayFeed(frames["astro"], fps=10)) == ReasonCode.REVERIFIED
    assert gate.reverify(ReplayFeed(frames["cam"], fps=10)) == ReasonCode.DRIVER_CHANGED
    state = parts.interlock.read()
    assert state["alarm"] is True and state["enable"] is True  # alarm, never cut
    flagged = [e for e in _events(parts) if e.kind == EventKind.CAB_REVERIFY]
    assert flagged[-1].reason == ReasonCode.DRIVER_CHANGED
    assert flagged[-1].payload.observed.operator_id == "op-cam"
    assert flagged[-1].severity.value == "high"
    gate.engine_stopped()
    assert gate.status.state == GateState.LOCKED
    state = parts.interlock.read()
    assert state["enable"] is False and state["alarm"] is False


def test_reverify_absence(make_gate, frames) -> None:
    parts = make_gate(gate={"absence_timeout_s": 1.0, "reverify_attempt_s": 1.0})
    gate = parts.gate
    gate.request_start(ReplayFeed(frames["astro"], fps=10))
    gate.engine_started()
    time.sleep(1.1)
    assert gate.reverify(ReplayFeed(frames["blank"], fps=5)) == ReasonCode.OPERATOR_ABSENT
    assert parts.interlock.read()["alarm"] is True
    assert parts.interlock.read()["enable"] is True


# --- claims (issue 11) -----------------------------------------------------------------


def test_impostor_with_valid_claim_is_claim_mismatch(make_gate, frames) -> None:
    parts = make_gate()
    claim = ClaimInfo(kind=ClaimKind.EMPLOYEE_NO, value="E100")  # the astronaut's number
    decision = parts.gate.request_start(ReplayFeed(frames["cam"], fps=10), claim)
    assert decision.reason == ReasonCode.CLAIM_MISMATCH
    event = _last_decision(parts)
    assert event.reason == ReasonCode.CLAIM_MISMATCH
    assert event.payload.claim == claim
    assert event.payload.match.operator_id == "op-astro"
    assert parts.interlock.read()["enable"] is False


def test_genuine_claim_by_certificate_qr_is_verified_one_to_one(make_gate, frames) -> None:
    from edge_agent.cab.claims import claim_info

    parts = make_gate(claims={"max_1n_risk": 0.0})  # 1:N disabled: only the claim can work
    info = claim_info(
        ClaimKind.CERT_QR,
        "https://zwfw.example.cn/cert?cert_no=TS-ASTRO-1",
        parts.config.claims.cert_qr_pattern,
    )
    assert info.value == "TS-ASTRO-1"
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10), info)
    assert decision.reason == ReasonCode.AUTHORIZED, decision.detail
    assert _last_decision(parts).payload.claim == info


def test_unknown_claim(make_gate, frames) -> None:
    parts = make_gate()
    claim = ClaimInfo(kind=ClaimKind.IC_CARD, value="CARD-404")
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10), claim).reason
        == ReasonCode.CLAIM_UNKNOWN
    )
    assert _last_decision(parts).payload.claim == claim


def test_one_to_n_refused_when_fmr_times_gallery_exceeds_bound(make_gate, frames, signer) -> None:
    # FMR 1e-3 x 2 templates (2 operators) = 2e-3 > 1e-3: 1:N is not allowed, a claim is required.
    parts = make_gate(
        snapshot=signer.snapshot(
            [astro_operator(), camera_operator()], with_cameraman_template=True
        ),
        claims={"max_1n_risk": 1e-3},
    )
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.CLAIM_REQUIRED
    assert "2 templates (2 operators)" in decision.detail
    assert parts.interlock.read()["enable"] is False
    # The same face with a claim goes through.
    claim = ClaimInfo(kind=ClaimKind.EMPLOYEE_NO, value="E100")
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10), claim).reason
        == ReasonCode.AUTHORIZED
    )


def test_one_to_n_risk_counts_templates_not_operators(make_gate, frames, signer) -> None:
    # One operator, three templates: a probe gets three chances of a false match, so
    # FMR 1e-3 x 3 = 3e-3 > 2e-3 requires a claim although only one person is enrolled.
    parts = make_gate(
        snapshot=signer.snapshot([astro_operator()], extra_astro_templates=2),
        claims={"max_1n_risk": 2e-3},
    )
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.CLAIM_REQUIRED
    assert "3 templates (1 operators)" in decision.detail
    # With one template the same bound allows 1:N.
    single = make_gate(snapshot=signer.snapshot([astro_operator()]), claims={"max_1n_risk": 2e-3})
    assert (
        single.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.AUTHORIZED
    )


def test_calibration_without_enough_pairs_is_refused(make_gate, frames, engine) -> None:
    from models.placeholder import placeholder_calibration

    thin = placeholder_calibration(engine.contract_id, impostor_pairs=1000)
    parts = make_gate(calibration=thin)
    assert parts.calibration_fault is not None
    assert "supports FMR" in parts.calibration_fault.detail
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.MODEL_MISSING
    )


def test_looser_threshold_override_disables_one_to_n(make_gate, frames) -> None:
    parts = make_gate(gate={"match_threshold": 0.5})
    assert (
        parts.gate.request_start(ReplayFeed(frames["astro"], fps=10)).reason
        == ReasonCode.CLAIM_REQUIRED
    )


# --- emergency override --------------------------------------------------------------------


def test_override_code_is_one_time_flagged_and_expires(make_gate) -> None:
    from edge_agent.cab.override import issue_code
    from tests.edge_agent.conftest import DEVICE, DEVICE_KEY

    parts = make_gate()
    soon = datetime.now(UTC) + timedelta(hours=1)
    code = issue_code(DEVICE_KEY.encode(), DEVICE, "ovr-1", soon)
    decision = parts.gate.override(code, "camera broken")
    assert decision.reason == ReasonCode.OVERRIDE and decision.authorized
    assert parts.interlock.read()["enable"] is True
    flagged = [e for e in _events(parts) if e.kind == EventKind.CAB_OVERRIDE]
    assert flagged[0].reason == ReasonCode.OVERRIDE and flagged[0].severity.value == "high"
    assert flagged[0].payload.code_id == "ovr-1"
    parts.gate.engine_stopped()
    reused = parts.gate.override(code)
    assert "already used" in reused.detail and not reused.authorized
    expired = issue_code(
        DEVICE_KEY.encode(), DEVICE, "ovr-2", datetime.now(UTC) - timedelta(seconds=1)
    )
    assert "expired" in parts.gate.override(expired).detail
    other = issue_code(DEVICE_KEY.encode(), "FL-0002", "ovr-3", soon)
    assert "not valid" in parts.gate.override(other).detail
    assert parts.interlock.read()["enable"] is False


def test_long_verification_keeps_the_heartbeat_going(make_gate) -> None:
    """The watchdog must not take a 4 s verification for a hung agent."""

    class SilentFeed:
        timeouts: list[float] = []

        def next_frame(self, timeout_s: float):
            self.timeouts.append(timeout_s)
            time.sleep(timeout_s)
            return None

    parts = make_gate(gate={"window_s": 1.0}, interlock={"heartbeat_s": 0.1, "watchdog_s": 0.5})
    beats: list[float] = []
    parts.gate.verifier.on_progress = lambda: beats.append(time.monotonic())
    feed = SilentFeed()
    assert parts.gate.request_start(feed).reason == ReasonCode.NO_FACE
    assert max(feed.timeouts) <= 0.1
    assert len(beats) >= 2  # one per poll, not one per window


def test_interlock_failure_on_enable_is_a_locked_internal_error(
    make_gate, frames, tmp_path
) -> None:
    from edge_agent.cab.agent import build_gate
    from edge_agent.cab.interlock import InterlockError

    class DeadRelay:
        """Hardware stand-in at its boundary: the relay module does not answer."""

        def set_outputs(self, enable: bool, alarm: bool) -> None:
            if enable:
                raise InterlockError("modbus 10.0.0.9:502: cannot connect")

        def close(self) -> None:
            pass

    seeded = make_gate()
    parts = build_gate(
        seeded.config,
        engine=seeded.engine,
        calibrations=_calibrations(seeded),
        interlock=DeadRelay(),
    )
    try:
        decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
        assert decision.reason == ReasonCode.INTERNAL_ERROR
        assert "cannot connect" in decision.detail
        assert parts.gate.status.state == GateState.LOCKED and parts.gate.status.enable is False
        reasons = [e.reason for e in _events(parts) if e.kind == EventKind.CAB_DECISION]
        assert reasons[-2:] == [ReasonCode.AUTHORIZED, ReasonCode.INTERNAL_ERROR]
    finally:
        parts.close()


def test_unrecordable_decision_keeps_start_locked(make_gate, frames) -> None:
    parts = make_gate()
    parts.outbox.close()  # the store is gone (disk failure): nothing can be recorded
    decision = parts.gate.request_start(ReplayFeed(frames["astro"], fps=10))
    assert decision.reason == ReasonCode.INTERNAL_ERROR
    assert parts.gate.status.state == GateState.LOCKED
    assert parts.interlock.read()["enable"] is False
