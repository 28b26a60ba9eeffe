"""How short the temporal window can be at 15 fps: BPCER and APCER per window length.

For each candidate `temporal.min_span_s` (with `temporal.min_frames` the frames that span
holds at 15 fps), every window of that length, started every 0.2 s, of:
- bona fide: the live clip liveness_replay_frames/live/real2.webm (1 subject);
- replay: spoof_replay/fake2.webm (the same subject on a phone, re-filmed);
- print: stills of the live clip and the antispoof_samples print, moved rigidly (generated);
is judged twice: by the temporal check alone, and by the default policy without a challenge
(passive + temporal, with the PAD pack when ../shared has the MiniFASNet files, else the
classical cues; a doubtful window counts as refused). Windows overlap, so the counts are
attempts, not independent subjects. Nothing is fitted: the chosen default is the shortest
span whose APCER (each attack type) and BPCER, both judgements, are no higher than at the
longest span. The default `temporal.min_span_s` (0.6 s) was set from this run.

Usage: python bench/temporal_window.py
Writes bench/results/temporal_window.json.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from _common import REPO, default_pack, pad_pack, resampled, write_result

from models.engine import FaceEngine
from models.liveness import LivenessPolicy, LivenessPolicyConfig, Outcome, observe
from models.liveness.policy import passive_scorer_for
from models.liveness.synthetic import rigid_sequence
from models.liveness.temporal import check_temporal
from models.liveness.types import LivenessFrame

DATA = REPO.parent / "shared" / "data" / "liveness"
FPS = 15.0
SPANS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2)
STEP_S = 0.2


def observed(engine: FaceEngine, images: list[np.ndarray]) -> list[LivenessFrame | None]:
    return [observe(engine, image, i / FPS) for i, image in enumerate(images)]


def sources(engine: FaceEngine) -> dict[str, list[list[LivenessFrame | None]]]:
    """Observed sequences per label."""
    clips = DATA / "liveness_replay_frames"
    live = list(resampled(clips / "live" / "real2.webm", FPS))
    replay = list(resampled(clips / "spoof_replay" / "fake2.webm", FPS))
    stills = [live[i] for i in range(0, len(live), max(1, len(live) // 4))]
    stills += [
        image
        for path in sorted((DATA / "antispoof_samples" / "spoof_print").glob("*.jpg"))
        if (image := cv2.imread(str(path))) is not None
    ]
    prints = [
        [image for image, _ in rigid_sequence(np.asarray(s, np.uint8), 60, fps=FPS, seed=i)]
        for i, s in enumerate(stills)
    ]
    return {
        "bona_fide": [observed(engine, live)],
        "replay": [observed(engine, replay)],
        "print": [observed(engine, p) for p in prints],
    }


def frames_for(span_s: float) -> int:
    """Frames a window of `span_s` holds at 15 fps (first to last frame spans it)."""
    return int(math.ceil(span_s * FPS - 1e-6)) + 1


def windows(seq: list[LivenessFrame | None], span_s: float) -> list[list[LivenessFrame]]:
    size = frames_for(span_s)
    step = max(1, round(STEP_S * FPS))
    out = []
    for start in range(0, len(seq) - size + 1, step):
        frames = [f for f in seq[start : start + size] if f is not None]
        out.append(frames)  # a window without faces counts (refused)
    return out


def rates(
    observed_by_label: dict[str, list[list[LivenessFrame | None]]],
    span_s: float,
    passive: Any,
) -> dict[str, Any]:
    size = frames_for(span_s)
    config = LivenessPolicyConfig.model_validate(
        {"active": "never", "temporal": {"min_span_s": span_s, "min_frames": max(3, size)}}
    )
    policy = LivenessPolicy(config, passive)
    out: dict[str, Any] = {"min_span_s": span_s, "min_frames": max(3, size)}
    for label, seqs in observed_by_label.items():
        judged = [w for seq in seqs for w in windows(seq, span_s)]
        temporal = sum(bool(w) and check_temporal(w, config.temporal).passed for w in judged)
        full = sum(bool(w) and policy.evaluate(w).outcome == Outcome.LIVE for w in judged)
        n = len(judged)
        if label == "bona_fide":
            out["bpcer_temporal"] = round(1 - temporal / n, 3)
            out["bpcer_policy"] = round(1 - full / n, 3)
        else:
            out[f"apcer_temporal_{label}"] = round(temporal / n, 3)
            out[f"apcer_policy_{label}"] = round(full / n, 3)
        out[f"{label}_windows"] = n
    return out


def main() -> None:
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: this bench needs the shared liveness clips")
    pack = pad_pack() or default_pack()
    engine = FaceEngine(pack, threads=2)
    passive = passive_scorer_for(engine, LivenessPolicyConfig())
    observed_by_label = sources(engine)
    rows = [rates(observed_by_label, span, passive) for span in SPANS]
    for row in rows:
        print(row)
    longest = rows[-1]
    keys = [k for k in longest if k.startswith(("apcer_", "bpcer_"))]
    chosen = next(r for r in rows if all(r[k] <= longest[k] for k in keys))
    write_result(
        "temporal_window",
        {
            "fps": FPS,
            "pack": engine.manifest.name,
            "passive": passive.name,
            "split": "one live subject (real2.webm), one replay clip, generated prints; "
            "nothing fitted",
            "rows": rows,
            "chosen_min_span_s": chosen["min_span_s"],
            "rule": "shortest span whose APCER per attack type and BPCER (temporal alone and "
            "the policy without a challenge) are no higher than at the longest span",
        },
    )


if __name__ == "__main__":
    main()
