"""Liveness configuration: which checks gate a start, and every threshold they use.

The agent embeds `LivenessPolicyConfig` in its YAML config; nothing in the checks is a bare
number. Defaults were set from physical reasoning and generated sequences, not fitted to the
internal evaluation clips (too few subjects to fit anything).
"""

from __future__ import annotations

import math
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

CLASSICAL_LIVE = math.inf
"""Default live band of the classical cues' score (no PAD model): none. The cues can refuse a
window but never confirm one, so without a PAD model the challenge decides every start that
the cues do not refuse. Measured (bench/cab_gate.py without PAD): with a 0.6 live band the cues
passed 19 of 21 real live starts, and one of 13 replay starts, without a challenge. A site
that accepts that risk sets `liveness.passive.live_threshold`."""
CLASSICAL_SPOOF = 0.3
"""Default spoof band of the classical cues' score."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActiveMode(StrEnum):
    """When the challenge-response check runs."""

    NEVER = "never"
    WHEN_UNCERTAIN = "when_uncertain"
    """Only when the passive score falls between the spoof and live thresholds."""
    ALWAYS = "always"


class CueConfig(_Section):
    """Classical per-frame cues around the face (screen/paper border, moiré, glare)."""

    context_scale: float = Field(
        default=2.6,
        ge=1.5,
        le=5.0,
        description="side of the square context window searched for a frame border, in face-box sides",
    )
    border_min_length: float = Field(
        default=0.8,
        ge=0.3,
        le=3.0,
        description="shortest straight edge counted as a screen/paper border, in face-box sides",
    )
    border_max_tilt_deg: float = Field(
        default=20.0,
        ge=1.0,
        le=45.0,
        description="how far from vertical/horizontal a border edge may lean",
    )
    border_gap: float = Field(
        default=0.05,
        ge=0.0,
        le=0.5,
        description="margin around the face box (in box sides) inside which edges are ignored",
    )
    moire_size: int = Field(
        default=128, ge=32, le=512, description="face crop side (px) for the frequency analysis"
    )
    moire_min_radius: float = Field(
        default=0.3,
        ge=0.05,
        le=0.9,
        description="inner radius of the high-frequency band, as a fraction of Nyquist",
    )
    specular_value: int = Field(
        default=245, ge=128, le=255, description="HSV value at or above which a pixel is glare"
    )
    specular_saturation: int = Field(
        default=40, ge=0, le=255, description="HSV saturation at or below which glare is counted"
    )


class ParallaxConfig(_Section):
    """Face-versus-background motion: a hand-held photo or phone moves its surround with the face."""

    ring_inner: float = Field(
        default=1.3,
        ge=1.0,
        le=3.0,
        description="inner side of the background ring, in face-box sides",
    )
    ring_outer: float = Field(
        default=2.4,
        ge=1.2,
        le=5.0,
        description="outer side of the background ring, in face-box sides",
    )
    min_face_motion: float = Field(
        default=0.04,
        ge=0.0,
        le=1.0,
        description="face displacement between two compared frames (in face-box sides) "
        "below which the pair says nothing about parallax",
    )
    max_points: int = Field(
        default=120, ge=8, le=2000, description="background corners tracked per frame pair"
    )
    comove_ratio: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="ring motion / face motion at or above which the surround moves with the face",
    )

    @model_validator(mode="after")
    def _ring(self) -> ParallaxConfig:
        if self.ring_outer <= self.ring_inner:
            raise ValueError("ring_outer must be larger than ring_inner")
        return self


class PassiveConfig(_Section):
    """The per-frame live score (ONNX PAD model when the pack has one, else classical cues)."""

    live_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="window live score (median over the sampled frames) at or above which "
        "passive passes; unset: the pack's PAD calibration `calibration`, else the PAD "
        "component's own threshold, else none for the classical cues (they never confirm "
        "a window on their own: the challenge decides)",
    )
    spoof_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="window live score below which passive refuses outright; between the two "
        "the passive result is uncertain (the challenge runs); unset: taken like "
        f"live_threshold ({CLASSICAL_SPOOF} for the classical cues)",
    )
    calibration: str = Field(
        default="pad",
        min_length=1,
        description="name of the PAD calibration in the pack's calibration block "
        "(`jifang calibrate liveness` writes it); ignored when absent",
    )
    max_frames: int = Field(
        default=8, ge=1, le=120, description="frames of a sequence scored (evenly spaced)"
    )
    border_weight: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="live-score penalty for a full border around the face",
    )
    moire_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="live-score penalty for a moiré peak; off by default because real faces "
        "already show peaks above the ratio (skimage astronaut 15, cameraman 21)",
    )
    moire_peak_ratio: float = Field(
        default=12.0,
        ge=1.0,
        le=1000.0,
        description="spectral peak / band median above which a moiré peak is counted as fully present",
    )
    specular_weight: float = Field(
        default=0.1, ge=0.0, le=1.0, description="live-score penalty for glare on the face"
    )
    specular_fraction: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="fraction of glare pixels in the face box counted as fully present",
    )
    parallax_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="live-score penalty when the background ring moves with the face",
    )
    cues: CueConfig = CueConfig()
    parallax: ParallaxConfig = ParallaxConfig()

    @model_validator(mode="after")
    def _bands(self) -> PassiveConfig:
        live, spoof = self.live_threshold, self.spoof_threshold
        if live is not None and spoof is not None and spoof > live:
            raise ValueError("spoof_threshold must not exceed live_threshold")
        return self


class TemporalConfig(_Section):
    """A face must move non-rigidly or blink across the sequence (a photo on a stand does not)."""

    min_frames: int = Field(
        default=10, ge=3, le=600, description="frames with dense landmarks needed to judge"
    )
    min_span_s: float = Field(
        default=0.6,
        ge=0.1,
        le=30.0,
        description="time the judged frames must span, seconds; the default is the shortest "
        "span at 15 fps whose APCER and BPCER were no higher than at 1.2 s "
        "(bench/temporal_window.py)",
    )
    nonrigid_residual: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="landmark residual after the best planar (homography) fit, in inter-ocular "
        "distances, above which a frame pair shows 3-D or expression motion",
    )
    min_nonrigid_fraction: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="fraction of frame pairs that must show non-rigid motion (unless a blink is seen)",
    )
    blink_ratio: float = Field(
        default=0.7,
        ge=0.1,
        le=0.95,
        description="eye aspect ratio below this fraction of the sequence's open-eye level is a closed eye",
    )
    min_open_ear: float = Field(
        default=0.15,
        ge=0.0,
        le=1.0,
        description="open-eye aspect ratio below which blinks cannot be judged (eyes not visible)",
    )


class ActiveConfig(_Section):
    """The challenge-response: blink, turn left, turn right, in random order with a time limit."""

    steps: int = Field(default=2, ge=1, le=3, description="challenges asked per attempt")
    step_timeout_s: float = Field(
        default=4.0, ge=1.0, le=30.0, description="time the operator has for each challenge"
    )
    turn_yaw: float = Field(
        default=0.12,
        ge=0.02,
        le=0.5,
        description="nose offset from the cheek midpoint, in cheek widths, that counts as a turn",
    )
    blink_ratio: float = Field(
        default=0.7,
        ge=0.1,
        le=0.95,
        description="eye aspect ratio below this fraction of the open-eye level is a closed eye",
    )
    mirror: bool = Field(
        default=False,
        description="the camera image is mirrored (operator's left appears on the image left)",
    )


class LivenessPolicyConfig(_Section):
    """Which liveness checks a start requires, and their settings."""

    enabled: bool = Field(default=True, description="false disables liveness (never in production)")
    require_passive: bool = Field(default=True, description="require the passive PAD score")
    require_temporal: bool = Field(
        default=True, description="require non-rigid motion or a blink across the frames"
    )
    active: ActiveMode = Field(
        default=ActiveMode.WHEN_UNCERTAIN, description="when to run the challenge-response"
    )
    passive: PassiveConfig = PassiveConfig()
    temporal: TemporalConfig = TemporalConfig()
    challenge: ActiveConfig = ActiveConfig()

    @model_validator(mode="after")
    def _some_check(self) -> LivenessPolicyConfig:
        if self.enabled and not (
            self.require_passive or self.require_temporal or self.active != ActiveMode.NEVER
        ):
            raise ValueError("liveness is enabled but no check is required")
        return self
