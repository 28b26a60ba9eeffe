"""The cab gate's decision: N good frames, 1:N or claimed 1:1 match, certificate check.

Every outcome is a `Decision` carrying one `ReasonCode`; anything that goes wrong on the way
is a `GateFault` (fail closed) and never an authorization.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import cv2
import numpy as np

from contract.codes import CertificateStatus, ReasonCode, ScoreKind
from contract.messages import (
    MAX_NORMALISED_SCORE,
    CategoryRule,
    CertificateInfo,
    ClaimInfo,
    DeviceConfig,
    GalleryOperator,
    MatchInfo,
)
from edge_agent.cab.cache import LocalGallery
from edge_agent.cab.claims import ResolvedClaim, resolve_claim
from edge_agent.cab.liveness import GateLiveness, LivenessVerdict, NoLiveness
from edge_agent.cab.types import Decision, Frame, GateFault
from edge_agent.config import ClaimsSection, GateSection, ModelsSection, QualitySection
from models.engine import FaceEngine, QualityScores
from models.errors import ModelError
from models.liveness import LivenessFrame
from models.manifest import Calibration, CalibrationBlock, IdentificationPoint
from models.matching import (
    Cohort,
    Identification,
    Scorer,
    calibrated_scorer,
    fuse_embeddings,
    identification,
)
from models.types import Face

logger = logging.getLogger(__name__)


class FrameFeed(Protocol):
    """Where the gate takes frames from; raises GateFault(CAMERA_LOST) when the camera is gone."""

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame, or None when none arrived within the timeout."""
        ...


@dataclass(frozen=True)
class MatchPolicy:
    """The similarity threshold in force and the false-match rate it is known to give."""

    threshold: float
    fmr: float | None
    """Calibrated FMR per comparison at `threshold`; None when unknown (looser override)."""
    calibration: str
    source: str
    """"calibration" or "config" (gate.match_threshold override)."""
    scorer: Scorer = Scorer()
    """How probes are scored, on the calibration's scale (raw cosine or AS-norm)."""
    identification: IdentificationPoint | None = None
    """1:N measured at the calibration's threshold (valid for a threshold at or above it)."""


def _scorer(name: str, calibration: Calibration, cohort: Cohort | None) -> Scorer:
    try:
        return calibrated_scorer(calibration, cohort)
    except ModelError as err:
        raise GateFault(ReasonCode.MODEL_MISSING, f"calibration {name!r}: {err}") from err


def resolve_policy(
    gate: GateSection,
    models: ModelsSection,
    block: CalibrationBlock,
    contract_id: str,
    cohort: Cohort | None = None,
) -> MatchPolicy:
    """Threshold and scoring from the named calibration (or the config override); refuse
    unsupported ones. `cohort` is the pack's distractor cohort, if it has one."""
    name = models.calibration
    calibration = block.calibrations.get(name)
    scorer = Scorer()
    if calibration is not None:
        scorer = _scorer(name, calibration, cohort)
        if calibration.contract_id != contract_id:
            raise GateFault(
                ReasonCode.MODEL_MISSING,
                f"calibration {name!r} was made for contract {calibration.contract_id}, the "
                f"pack's is {contract_id}",
            )
        if calibration.supported_fmr > gate.target_fmr:
            raise GateFault(
                ReasonCode.MODEL_MISSING,
                f"calibration {name!r} has {calibration.impostor_pairs} impostor pairs: it "
                f"supports FMR >= {calibration.supported_fmr:.2g}, not the configured "
                f"gate.target_fmr {gate.target_fmr:.2g}",
            )
        if calibration.target_fmr > gate.target_fmr:
            raise GateFault(
                ReasonCode.MODEL_MISSING,
                f"calibration {name!r} is for FMR {calibration.target_fmr:.2g}, looser than "
                f"gate.target_fmr {gate.target_fmr:.2g}",
            )
    if gate.match_threshold is not None:
        # A stricter override keeps the calibrated FMR as an upper bound; a looser one has
        # no known FMR, which makes 1:N without a claim impossible (see require_claim).
        fmr = (
            calibration.target_fmr
            if calibration is not None and gate.match_threshold >= calibration.threshold
            else None
        )
        measured = (
            calibration.identification
            if calibration is not None and gate.match_threshold >= calibration.threshold
            else None
        )
        if calibration is None and not -1.0 <= gate.match_threshold <= 1.0:
            raise GateFault(
                ReasonCode.MODEL_MISSING,
                f"gate.match_threshold {gate.match_threshold} is not a cosine (-1..1), and no "
                f"calibration {name!r} says what else it could be",
            )
        return MatchPolicy(gate.match_threshold, fmr, name, "config", scorer, measured)
    if calibration is None:
        known = ", ".join(sorted(block.calibrations)) or "none"
        raise GateFault(
            ReasonCode.MODEL_MISSING,
            f"the pack has no calibration {name!r} (has: {known}) and gate.match_threshold is "
            "not set",
        )
    return MatchPolicy(calibration.threshold, calibration.target_fmr, name, "calibration", scorer)


def one_to_n_risk(policy: MatchPolicy, templates: int, min_margin: float) -> float | None:
    """The estimated chance that a stranger's 1:N search names someone (None: unknown).

    Measured (the calibration's `identification`, written by `jifang calibrate
    identification`): the upper bound of FPIR, scaled up in proportion when the site's
    gallery holds more templates than the measured one. It applies only when the gate's
    margin is at least the measured one (a larger margin can only turn a false positive
    into an ambiguous search). Otherwise estimated: calibrated FMR per comparison x
    templates (several per operator raise the risk about in proportion).
    """
    point = policy.identification
    if point is not None and min_margin >= point.min_margin:
        return point.fpir_upper * max(1.0, templates / point.templates)
    if policy.fmr is None:
        return None
    return policy.fmr * templates


def one_to_n_allowed(
    policy: MatchPolicy, gallery_size: int, claims: ClaimsSection, min_margin: float
) -> bool:
    """1:N without a claim only when the estimated risk stays within claims.max_1n_risk."""
    risk = one_to_n_risk(policy, gallery_size, min_margin)
    return risk is not None and risk <= claims.max_1n_risk


@dataclass(frozen=True)
class FrameCheck:
    """What one frame gave: a usable embedding, or the reason it was not usable."""

    reason: ReasonCode | None
    embedding: np.ndarray | None = None
    face: Face | None = None
    quality: QualityScores | None = None
    liveness_score: float | None = None


def quality_failure(q: QualityScores, section: QualitySection) -> str | None:
    """Which quality gate a face fails, or None."""
    if q.face_px < section.min_face_px:
        return f"face {q.face_px:.0f} px < {section.min_face_px}"
    if q.sharpness < section.min_sharpness:
        return f"sharpness {q.sharpness:.2f} < {section.min_sharpness}"
    if abs(q.yaw_deg) > section.max_yaw_deg:
        return f"yaw {q.yaw_deg:.0f} deg > {section.max_yaw_deg}"
    if abs(q.pitch_deg) > section.max_pitch_deg:
        return f"pitch {q.pitch_deg:.0f} deg > {section.max_pitch_deg}"
    if q.exposure < section.min_exposure:
        return f"exposure {q.exposure:.2f} < {section.min_exposure}"
    return None


def _largest(faces: list[Face]) -> Face:
    def area(face: Face) -> float:
        x0, y0, x1, y1 = face.detection.box
        return (x1 - x0) * (y1 - y0)

    return max(faces, key=area)


def on_scale(score: float, scorer: Scorer) -> float:
    """The score clamped to what the wire accepts for its kind (rounding can pass ±1)."""
    bound = 1.0 if scorer.kind == ScoreKind.COSINE else MAX_NORMALISED_SCORE
    return max(-bound, min(bound, score))


class FrameAnalyzer:
    """Detect, quality-gate and embed the operator's face in one frame (liveness is per window)."""

    def __init__(self, engine: FaceEngine, quality: QualitySection) -> None:
        self.engine = engine
        self.quality = quality

    def largest_face(self, image: np.ndarray) -> Face | None:
        """The operator's face (the largest one), or None."""
        faces = self.engine.detect(image)
        return _largest(faces) if faces else None

    def check(self, image: np.ndarray) -> FrameCheck:
        """One frame's verdict; the largest face is taken as the operator's."""
        faces = self.engine.detect(image)
        if not faces:
            return FrameCheck(ReasonCode.NO_FACE)
        face = _largest(faces)
        scores = self.engine.quality(image, face)
        if quality_failure(scores, self.quality) is not None:
            return FrameCheck(ReasonCode.LOW_QUALITY, face=face, quality=scores)
        embedding = self.engine.embed(image, face)
        return FrameCheck(None, embedding, face, scores)


def _rule_accepts(rule: CategoryRule, cert: CertificateInfo) -> bool:
    return (
        rule.category == cert.category
        and rule.code_system == cert.code_system
        and (rule.scope is None or rule.scope == cert.scope)
    )


def certificate_reason(
    operator: GalleryOperator,
    rules: tuple[CategoryRule, ...],
    today: date,
    only: CertificateInfo | None = None,
) -> tuple[ReasonCode, CertificateInfo | None]:
    """AUTHORIZED with the certificate that allows it, or why none does."""
    pool = (only,) if only is not None else operator.certificates
    relevant = [c for c in pool if any(_rule_accepts(r, c) for r in rules)]
    if not relevant:
        return ReasonCode.WRONG_CATEGORY, (pool[0] if pool else None)
    for cert in relevant:
        if cert.status == CertificateStatus.VALID and cert.issue_date <= today <= cert.expiry_date:
            return ReasonCode.AUTHORIZED, cert
    # Report the most serious refusal among the relevant certificates.
    for status, reason in (
        (CertificateStatus.REVOKED, ReasonCode.CERT_REVOKED),
        (CertificateStatus.SUSPENDED, ReasonCode.CERT_SUSPENDED),
    ):
        for cert in relevant:
            if cert.status == status:
                return reason, cert
    return ReasonCode.CERT_EXPIRED, relevant[0]


@dataclass(frozen=True)
class Collected:
    """Frames gathered within one window."""

    good: list[FrameCheck]
    live_frames: list[LivenessFrame]
    """The usable frames as the liveness policy sees them (empty for policy none)."""
    seen: int
    faces: int
    worst: ReasonCode
    best_image: np.ndarray | None


@dataclass(frozen=True)
class StartWindow:
    """What a start's window gave: its frames, the match on them, and settled liveness."""

    collected: Collected
    match: Decision | None
    """The match and certificate decision on the good frames (None with too few of them)."""
    verdict: LivenessVerdict | None
    """Liveness settled live within the window (None: not settled, judge in full)."""


_CERTIFICATE_REFUSALS = frozenset(
    {
        ReasonCode.CERT_EXPIRED,
        ReasonCode.CERT_REVOKED,
        ReasonCode.CERT_SUSPENDED,
        ReasonCode.WRONG_CATEGORY,
    }
)


class Verifier:
    """Decides one start-up (or re-verification) from a frame feed."""

    def __init__(
        self,
        analyzer: FrameAnalyzer,
        gate: GateSection,
        claims: ClaimsSection,
        policy: MatchPolicy,
        poll_s: float = 0.25,
        liveness: GateLiveness | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.liveness: GateLiveness = liveness or NoLiveness()
        self.gate = gate
        self.claims = claims
        self.policy = policy
        self.poll_s = poll_s
        self.on_progress: Callable[[], None] | None = None
        """Called at least every `poll_s` while collecting (the agent's heartbeat), so a long
        verification is not mistaken for a hung agent by the watchdog."""

    def collect(
        self, feed: FrameFeed, window_s: float, needed: int, for_liveness: bool = False
    ) -> Collected:
        """Analyse frames until `needed` are good (and liveness has enough) or the window ends."""
        good: list[FrameCheck] = []
        live_frames: list[LivenessFrame] = []
        seen = faces = 0
        refusal = ReasonCode.NO_FACE
        best_image: np.ndarray | None = None
        first_t: float | None = None
        deadline = time.monotonic() + window_s
        while len(good) < needed or (for_liveness and self.liveness.frames_needed(live_frames)):
            if self.on_progress is not None:
                self.on_progress()
            remaining = max(0.0, deadline - time.monotonic())
            frame = feed.next_frame(timeout_s=min(remaining, self.poll_s))
            if frame is None:
                if time.monotonic() >= deadline:
                    break
                continue
            if first_t is None:
                first_t = frame.t
            elif frame.t - first_t > window_s:
                break
            seen += 1
            result = self.analyzer.check(frame.image)
            if result.face is not None:
                faces += 1
            if result.reason is None:
                good.append(result)
                if for_liveness and result.face is not None:
                    observed = self.liveness.frame(frame.image, result.face, frame.t)
                    if observed is not None:
                        live_frames.append(observed)
                if best_image is None:
                    best_image = frame.image
            elif _more_informative(result.reason, refusal):
                refusal = result.reason
        return Collected(good, live_frames, seen, faces, refusal, best_image)

    def decide(
        self,
        feed: FrameFeed,
        gallery: LocalGallery,
        device_config: DeviceConfig,
        today: date,
        claim: ClaimInfo | None = None,
    ) -> Decision:
        """Collect frames and decide; a claim switches to 1:1 against the claimed operator.

        Matching and the certificate check run on the frames as they arrive while liveness
        keeps observing (see `_start_window`); the challenge runs only when the window ends
        with the passive score in doubt.
        """
        resolved: ResolvedClaim | None = None
        if claim is not None:
            try:
                resolved = resolve_claim(claim, gallery)
            except GateFault as fault:
                return Decision(fault.reason, fault.detail, claim=claim)
        elif not one_to_n_allowed(
            self.policy, gallery.template_count(), self.claims, self.gate.min_margin
        ):
            return Decision(
                ReasonCode.CLAIM_REQUIRED,
                _risk_detail(
                    self.policy,
                    gallery.template_count(),
                    gallery.operators_with_templates(),
                    self.claims,
                    self.gate.min_margin,
                ),
            )

        def match(good: list[FrameCheck]) -> Decision:
            probe = fuse_embeddings([g.embedding for g in good if g.embedding is not None])
            if resolved is not None:
                return self._one_to_one(probe, resolved, gallery, device_config, today)
            return self._one_to_n(probe, gallery, device_config, today)

        window = self._start_window(feed, match)
        got = window.collected
        if len(got.good) < self.gate.frames_required:
            return Decision(
                got.worst,
                f"{len(got.good)} of {self.gate.frames_required} usable frames in "
                f"{got.seen} seen ({got.faces} with a face)",
                claim=claim,
                frames_used=len(got.good),
                faces_seen=got.faces,
            )
        evidence = _jpeg(got.best_image)
        decision = window.match
        assert decision is not None  # set whenever the window holds frames_required good ones
        verdict = window.verdict
        if verdict is None and decision.reason == ReasonCode.AUTHORIZED:
            # The window ended without settled liveness: the full policy, challenge included.
            verdict = self.liveness.judge(
                got.live_frames, _source(feed, self.on_progress), self.analyzer.largest_face
            )
        liveness = verdict.score if verdict is not None else None
        if verdict is not None and not verdict.live:
            return Decision(
                ReasonCode.LIVENESS_FAILED,
                verdict.detail,
                claim=claim,
                frames_used=len(got.good),
                faces_seen=got.faces,
                liveness_score=liveness,
                evidence_jpeg=evidence,
            )
        return Decision(
            decision.reason,
            decision.detail,
            decision.operator_id,
            decision.match,
            claim,
            len(got.good),
            got.faces,
            liveness,
            evidence,
            liveness_by=verdict.by if verdict is not None else None,
        )

    def _start_window(
        self, feed: FrameFeed, match: Callable[[list[FrameCheck]], Decision]
    ) -> StartWindow:
        """Frames of one start, analysed as they arrive, until the decision is settled.

        - from the `frames_required`-th good frame on, the fused probe is matched: a matched
          operator whose certificate refuses ends the window at once (more frames cannot
          change a certificate);
        - once liveness holds its minimum evidence, the window ends as soon as the policy
          finds the frames live (and the match authorizes), or the match refuses (an
          unknown face is not asked for a challenge), or liveness stops observing
          (`liveness.observe_s`);
        - it never runs past `gate.window_s`; without a live verdict the caller judges
          liveness in full (the challenge when in doubt).
        """
        required = self.gate.frames_required
        good: list[FrameCheck] = []
        live_frames: list[LivenessFrame] = []
        seen = faces = 0
        refusal = ReasonCode.NO_FACE
        best_image: np.ndarray | None = None
        first_t: float | None = None
        decision: Decision | None = None
        verdict: LivenessVerdict | None = None
        window_s = self.gate.window_s
        deadline = time.monotonic() + window_s

        def collected() -> Collected:
            return Collected(good, live_frames, seen, faces, refusal, best_image)

        while True:
            if self.on_progress is not None:
                self.on_progress()
            remaining = max(0.0, deadline - time.monotonic())
            frame = feed.next_frame(timeout_s=min(remaining, self.poll_s))
            if frame is None:
                if time.monotonic() >= deadline:
                    break
                continue
            if first_t is None:
                first_t = frame.t
            elif frame.t - first_t > window_s:
                break
            seen += 1
            result = self.analyzer.check(frame.image)
            if result.face is not None:
                faces += 1
            if result.reason is not None:
                if _more_informative(result.reason, refusal):
                    refusal = result.reason
                continue
            good.append(result)
            if best_image is None:
                best_image = frame.image
            if result.face is not None:
                observed = self.liveness.frame(frame.image, result.face, frame.t)
                if observed is not None:
                    live_frames.append(observed)
            if len(good) < required:
                continue
            decision = match(good)
            if decision.reason in _CERTIFICATE_REFUSALS:
                break
            if self.liveness.frames_needed(live_frames):
                continue
            if decision.reason != ReasonCode.AUTHORIZED:
                break
            done, verdict = self.liveness.settle(live_frames)
            if done:
                break
        if len(good) >= required and decision is None:
            decision = match(good)
        return StartWindow(collected(), decision, verdict)

    def _one_to_one(
        self,
        probe: np.ndarray,
        claim: ResolvedClaim,
        gallery: LocalGallery,
        device_config: DeviceConfig,
        today: date,
    ) -> Decision:
        operator = claim.operator
        if len(gallery.operator_templates(operator.operator_id)) == 0:
            return Decision(ReasonCode.CLAIM_MISMATCH, "claimed operator has no face template")
        scorer = self.policy.scorer
        score = on_scale(scorer.claim(gallery.index(), operator.operator_id, probe), scorer)
        match = MatchInfo(
            operator_id=operator.operator_id,
            certificate_no=claim.certificate.certificate_no if claim.certificate else None,
            score=score,
            threshold=self.policy.threshold,
            margin=2.0,
            score_kind=scorer.kind,
        )
        if score < self.policy.threshold:
            return Decision(
                ReasonCode.CLAIM_MISMATCH,
                f"face scores {score:.3f} against the claimed operator, threshold "
                f"{self.policy.threshold:.3f}",
                match=match,
            )
        reason, cert = certificate_reason(
            operator, device_config.accepted_categories, today, claim.certificate
        )
        match = match.model_copy(update={"certificate_no": cert.certificate_no if cert else None})
        return Decision(reason, _cert_detail(reason, cert), operator.operator_id, match)

    def _one_to_n(
        self, probe: np.ndarray, gallery: LocalGallery, device_config: DeviceConfig, today: date
    ) -> Decision:
        scorer = self.policy.scorer
        result = scorer.search(gallery.index(), probe, k=2)
        best = result.best
        outcome = identification(result, self.policy.threshold, self.gate.min_margin)
        if best is None:
            return Decision(ReasonCode.NO_MATCH, "gallery holds no templates")
        margin = min(2.0, max(0.0, result.margin))
        match = MatchInfo(
            operator_id=best.label,
            score=on_scale(best.score, scorer),
            threshold=self.policy.threshold,
            margin=margin,
            score_kind=scorer.kind,
        )
        if outcome == Identification.BELOW_THRESHOLD:
            return Decision(
                ReasonCode.NO_MATCH,
                f"best score {best.score:.3f} < threshold {self.policy.threshold:.3f}",
                match=match,
            )
        if outcome == Identification.AMBIGUOUS:
            return Decision(
                ReasonCode.AMBIGUOUS_MATCH,
                f"margin {margin:.3f} over the second operator < {self.gate.min_margin}",
                match=match,
            )
        operator = gallery.operators[best.label]
        reason, cert = certificate_reason(operator, device_config.accepted_categories, today)
        match = match.model_copy(update={"certificate_no": cert.certificate_no if cert else None})
        return Decision(reason, _cert_detail(reason, cert), operator.operator_id, match)


_SPECIFICITY = (ReasonCode.NO_FACE, ReasonCode.LOW_QUALITY, ReasonCode.LIVENESS_FAILED)


def _more_informative(candidate: ReasonCode, current: ReasonCode) -> bool:
    """A frame that got further down the pipeline explains a refusal better."""
    return _SPECIFICITY.index(candidate) > _SPECIFICITY.index(current)


def _source(
    feed: FrameFeed, on_progress: Callable[[], None] | None
) -> Callable[[float], tuple[np.ndarray, float] | None]:
    """The feed as the liveness challenge reads it (heartbeating while it waits)."""

    def next_frame(timeout_s: float) -> tuple[np.ndarray, float] | None:
        if on_progress is not None:
            on_progress()
        frame = feed.next_frame(timeout_s=timeout_s)
        return None if frame is None else (frame.image, frame.t)

    return next_frame


def _jpeg(image: np.ndarray | None) -> bytes | None:
    if image is None:
        return None
    ok, data = cv2.imencode(".jpg", image)
    return data.tobytes() if ok else None


def _cert_detail(reason: ReasonCode, cert: CertificateInfo | None) -> str:
    if cert is None:
        return "operator holds no certificate"
    return (
        f"certificate {cert.certificate_no} {cert.category}/{cert.code_system.value} "
        f"{cert.status.value} until {cert.expiry_date}: {reason.value}"
    )


def _risk_detail(
    policy: MatchPolicy, size: int, operators: int, claims: ClaimsSection, min_margin: float
) -> str:
    risk = one_to_n_risk(policy, size, min_margin)
    if risk is None:
        return "threshold overridden below calibration: FMR unknown, 1:N disabled; present a claim"
    point = policy.identification
    if point is not None and min_margin >= point.min_margin:
        basis = (
            f"measured FPIR <= {point.fpir_upper:.2g} ({point.false_positives} of "
            f"{point.non_mated_searches}) at {point.templates} templates, scaled to {size}"
        )
    else:
        basis = f"calibrated FMR {policy.fmr:.2g} x {size} templates"
    return (
        f"{basis} ({operators} operators) = {risk:.3g} > claims.max_1n_risk "
        f"{claims.max_1n_risk:.3g}; present a claim"
    )
