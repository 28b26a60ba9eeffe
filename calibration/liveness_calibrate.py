"""`jifang calibrate liveness`: the passive PAD's two bands from a site's own presentations.

The data is laid out as for `jifang eval liveness` (`live/`, `spoof_print/`, `spoof_replay/`,
images or short videos; one file = one presentation, scored as there).

- `live_threshold`, the confident live point: the lowest score at which no attack type has an
  APCER above `max_apcer` (APCER = attacks of the type scoring at or above it). A start whose
  window scores at least this passes passive without a challenge.
- `spoof_threshold`, the refusal point: the highest score, no higher than the live point, below
  which at most `max_bpcer` of the bona fide presentations fall. A window scoring below it is
  refused without a challenge; between the two bands the challenge decides.

The rates are reported in ISO/IEC 30107-3 terms at the chosen points. A rate asked for that the
data cannot resolve (fewer than 3 / rate presentations of the class: rule of three) is reported
as a warning, not silently claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from calibration.liveness_eval import CLASSES, Presentation, ScoredFolder, rates
from models.manifest import PadCalibration

METHOD = (
    "live_threshold: lowest score with APCER <= max_apcer for every attack type; "
    "spoof_threshold: highest score <= live_threshold with BPCER below it <= max_bpcer; "
    "one presentation per file, a video scored as the median of its frames"
)


@dataclass(frozen=True)
class LivenessBands:
    """The chosen bands and the rates at them."""

    live_threshold: float
    spoof_threshold: float
    document: dict[str, Any]
    warnings: list[str]


def _score(p: Presentation) -> float:
    """A presentation without a face is rejected at every threshold."""
    return p.score if p.faces > 0 else -math.inf


def live_point(attacks: list[float], max_apcer: float) -> float:
    """Lowest threshold t in [0, 1] with fraction(scores >= t) <= max_apcer."""
    allowed = math.floor(max_apcer * len(attacks) + 1e-9)
    ranked = sorted((s for s in attacks if s > -math.inf), reverse=True)
    if allowed >= len(ranked):
        return 0.0
    # The (allowed + 1)-th highest attack must fall below t: t sits just above it.
    return min(1.0, math.nextafter(max(ranked[allowed], 0.0), math.inf))


def spoof_point(live: list[float], max_bpcer: float, ceiling: float) -> float:
    """Highest threshold t <= ceiling with fraction(scores < t) <= max_bpcer."""
    allowed = math.floor(max_bpcer * len(live) + 1e-9)
    ranked = sorted(live)
    if allowed >= len(ranked):
        return ceiling
    # At most `allowed` live scores may lie strictly below t: t is the next one up.
    return max(0.0, min(ceiling, ranked[allowed]))


def choose_bands(items: list[Presentation], max_apcer: float, max_bpcer: float) -> LivenessBands:
    """The two bands from scored presentations; ValueError when a needed class is missing."""
    by_label = {label: [_score(p) for p in items if p.label == label] for label in CLASSES}
    live = by_label["live"]
    attack_labels = [label for label, kind in CLASSES.items() if kind and by_label[label]]
    if not live:
        raise ValueError("no live presentations: the live/ folder is missing or empty")
    if not attack_labels:
        raise ValueError("no attack presentations: spoof_print/ and spoof_replay/ are empty")
    warnings = []
    for label in attack_labels:
        n = len(by_label[label])
        if max_apcer > 0 and n < 3 / max_apcer:
            warnings.append(
                f"{label}: {n} presentations cannot support APCER {max_apcer:g} (rule of "
                f"three needs {math.ceil(3 / max_apcer)})"
            )
    if max_bpcer > 0 and len(live) < 3 / max_bpcer:
        warnings.append(
            f"live: {len(live)} presentations cannot support BPCER {max_bpcer:g} (rule of "
            f"three needs {math.ceil(3 / max_bpcer)})"
        )
    for label, kind in CLASSES.items():
        if kind and not by_label[label]:
            warnings.append(f"{label}: no presentations; that attack type is not calibrated")
    live_t = max(live_point(by_label[label], max_apcer) for label in attack_labels)
    spoof_t = spoof_point(live, max_bpcer, live_t)
    at_live = rates(items, live_t)
    at_spoof = rates(items, spoof_t)
    challenged = sum(spoof_t <= s < live_t for s in live) / len(live)
    document = {
        "live_threshold": live_t,
        "spoof_threshold": spoof_t,
        "bpcer": at_live["bpcer"],
        "apcer": at_live["apcer"],
        "bpcer_refused": at_spoof["bpcer"],
        "apcer_challenged": at_spoof["apcer"],
        "bona_fide_challenge_rate": challenged,
        "targets": {"max_apcer": max_apcer, "max_bpcer": max_bpcer},
        "counts": at_live["counts"],
        "method": METHOD,
        "warnings": warnings,
    }
    return LivenessBands(live_t, spoof_t, document, warnings)


def pad_calibration(bands: LivenessBands, scored: ScoredFolder, data: Path) -> PadCalibration:
    """The record written into the pack's calibration block."""
    from models.types import Task

    entry = scored.manifest.file(Task.LIVENESS)
    assert entry is not None  # score_folder loaded this PAD
    doc = bands.document
    return PadCalibration(
        live_threshold=bands.live_threshold,
        spoof_threshold=bands.spoof_threshold,
        pad_sha256=entry.sha256,
        bpcer=doc["bpcer"],
        apcer={k: v for k, v in doc["apcer"].items() if v is not None},
        bpcer_refused=doc["bpcer_refused"],
        counts={k: v for k, v in doc["counts"].items() if isinstance(v, int)},
        data=str(data),
        created=date.today(),
        method=METHOD,
    )
