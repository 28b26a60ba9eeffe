"""Liveness start policy on ../shared/data/liveness: APCER per attack type and BPCER, with counts.

Attempts (each one is a start attempt of `--window-s` seconds; no attempt shares frames):
- bona fide: windows of the live clip liveness_replay_frames/live/real2.webm (1 subject);
- replay: windows of spoof_replay/fake2.webm (same subject on a phone, re-filmed), plus the
  two screen stills of antispoof_samples/spoof_screen moved rigidly (a still on a screen);
- print: antispoof_samples/spoof_print (1 photo of a print) moved rigidly, plus one still
  frame per bona fide window moved rigidly (a printed photo of the live subject; generated).
When the policy asks for the challenge, the frames that follow the window in the same clip
are the response (a recorded attack cannot follow a random prompt; a live clip recorded
without prompts is the worst case for BPCER). Nothing is fitted: the policy runs with its
default config. It runs the default policy once per model: the open pack (no PAD model: the
classical cues) and the open pack plus the shared MiniFASNet PAD. `liveness.json` holds the
default pack's figures at the top and a row per model under `models`, BPCER also in dim and
backlit windows made from the live clip; the per-cue breakdown goes to `liveness_detail.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import REPO, RESULTS, default_pack, pad_pack, write_result

from models.engine import FaceEngine
from models.liveness import LivenessPolicy, LivenessPolicyConfig, Outcome, cues, observe
from models.liveness.passive import sample
from models.liveness.policy import passive_scorer_for
from models.liveness.synthetic import rigid_sequence
from models.liveness.temporal import check_temporal
from models.liveness.types import LivenessFrame

DATA = REPO.parent / "shared" / "data" / "liveness"


@dataclass
class Attempt:
    """One start attempt: its label, frames, and the frames that answer a challenge."""

    label: str
    """bona_fide, print or replay."""
    source: str
    frames: list[tuple[np.ndarray, float]]
    response: list[tuple[np.ndarray, float]]
    condition: str = "normal"
    """Lighting of a bona fide attempt: normal, or dim / backlit (made from the live clip)."""


def dim(image: np.ndarray) -> np.ndarray:
    """Low light: a third of the brightness, with the gamma lift a webcam's auto-exposure gives."""
    scaled = (image.astype(np.float32) / 255.0) ** 1.2 * 0.35
    return np.asarray(np.clip(scaled * 255.0, 0, 255), np.uint8)


def backlit(image: np.ndarray) -> np.ndarray:
    """A bright window behind the operator: the centre (the face) at half brightness, the
    surround washed towards white."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2)
    surround = np.clip((r - 0.35) / 0.5, 0.0, 1.0)[..., None]
    out = image.astype(np.float32) * (0.5 + 0.5 * surround) + 150.0 * surround
    return np.asarray(np.clip(out, 0, 255), np.uint8)


LIGHTING = {"dim": dim, "backlit": backlit}


Relight = Callable[[np.ndarray], np.ndarray]
"""A lighting change of one frame."""


def relit(
    frames: list[tuple[np.ndarray, float]], change: Relight
) -> list[tuple[np.ndarray, float]]:
    """The same frames under another lighting."""
    return [(change(image), t) for image, t in frames]


def read_clip(path: Path) -> list[tuple[np.ndarray, float]]:
    """Every frame of a video with its time (seconds)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames: list[tuple[np.ndarray, float]] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append((frame, len(frames) / fps))
    capture.release()
    if not frames:
        raise SystemExit(f"{path}: no frames could be read")
    return frames


def windows(clip: list[tuple[np.ndarray, float]], seconds: float) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) frame ranges of `seconds` each."""
    fps = 1.0 / (clip[1][1] - clip[0][1]) if len(clip) > 1 else 30.0
    size = max(2, int(round(seconds * fps)))
    return [(s, s + size) for s in range(0, len(clip) - size + 1, size)]


def attempts(window_s: float, response_s: float, still_frames: int) -> list[Attempt]:
    """All attempts built from the shared data."""
    out: list[Attempt] = []
    frames_dir = DATA / "liveness_replay_frames"
    for label, clip_path in (
        ("bona_fide", frames_dir / "live" / "real2.webm"),
        ("replay", frames_dir / "spoof_replay" / "fake2.webm"),
    ):
        clip = read_clip(clip_path)
        fps = 1.0 / (clip[1][1] - clip[0][1])
        for i, (s, e) in enumerate(windows(clip, window_s)):
            response = clip[e : e + int(response_s * fps)]
            out.append(Attempt(label, f"{clip_path.name}#{i}", clip[s:e], response))
            if label == "bona_fide":
                for condition, change in LIGHTING.items():
                    out.append(
                        Attempt(
                            label,
                            f"{clip_path.name}#{i} {condition} (generated)",
                            relit(clip[s:e], change),
                            relit(response, change),
                            condition,
                        )
                    )
            if label == "bona_fide":
                still = clip[(s + e) // 2][0]
                seq = rigid_sequence(np.asarray(still, np.uint8), 2 * still_frames, seed=i)
                out.append(
                    Attempt(
                        "print",
                        f"{clip_path.name}#{i} still (generated)",
                        seq[:still_frames],
                        _retime(seq[still_frames:], seq),
                    )
                )
    samples = DATA / "antispoof_samples"
    for label, folder in (("print", "spoof_print"), ("replay", "spoof_screen")):
        for i, path in enumerate(sorted((samples / folder).glob("*.jpg"))):
            image = cv2.imread(str(path))
            if image is None:
                raise SystemExit(f"{path}: not a readable image")
            seq = rigid_sequence(np.asarray(image, np.uint8), 2 * still_frames, seed=100 + i)
            out.append(
                Attempt(
                    label,
                    f"{folder}/{path.name} moved rigidly",
                    seq[:still_frames],
                    _retime(seq[still_frames:], seq),
                )
            )
    return out


def _retime(
    tail: list[tuple[np.ndarray, float]], whole: list[tuple[np.ndarray, float]]
) -> list[tuple[np.ndarray, float]]:
    """Response frames keep the clock running on from the attempt."""
    return tail if tail else whole[-1:]


def run(engine: FaceEngine, policy: LivenessPolicy, attempt: Attempt, seed: int) -> dict[str, Any]:
    """Evaluate one attempt (with the challenge when asked)."""
    began = time.perf_counter()
    observed = [observe(engine, image, t) for image, t in attempt.frames]
    observe_ms = 1000 * (time.perf_counter() - began) / max(1, len(attempt.frames))
    frames: list[LivenessFrame] = [f for f in observed if f is not None]
    began = time.perf_counter()
    decision = policy.evaluate(frames)
    evaluate_ms = 1000 * (time.perf_counter() - began)
    challenged = decision.outcome == Outcome.CHALLENGE
    if challenged:
        start = attempt.frames[-1][1]
        session = policy.start_challenge(start, random.Random(seed))
        answered: list[LivenessFrame] = []
        for image, t in attempt.response:
            frame = observe(engine, image, t)
            if frame is not None:
                answered.append(frame)
            state = session.feed(
                frame if frame is not None else LivenessFrame(image, frames[-1].face, t)
            )
            if state.value != "pending":
                break
        decision = policy.finish_challenge(session, decision.scores, answered)
    return {
        "cues": measure_cues(frames, policy.config),
        "label": attempt.label,
        "condition": attempt.condition,
        "source": attempt.source,
        "faces": len(frames),
        "frames": len(attempt.frames),
        "challenged": challenged,
        "accepted": decision.live,
        "cause": decision.cause.value if decision.cause else None,
        "scores": {k: round(v, 4) for k, v in decision.scores.items()},
        "observe_ms_per_frame": round(observe_ms, 1),
        "evaluate_ms": round(evaluate_ms, 1),
    }


def measure_cues(
    frames: list[LivenessFrame], config: LivenessPolicyConfig
) -> dict[str, list[float]]:
    """Raw value of every cue on an attempt, whatever the policy decided (for the cue table)."""
    chosen = sample(frames, config.passive.max_frames)
    c = config.passive.cues
    out: dict[str, list[float]] = defaultdict(list)
    for f in chosen:
        box = f.face.detection.box
        out["border"].append(cues.border_score(cues.border_sides(f.image, box, c)))
        out["moire_ratio"].append(cues.moire_ratio(f.image, box, c))
        out["specular_fraction"].append(cues.specular_fraction(f.image, box, c))
    for a, b in zip(chosen, chosen[1:], strict=False):
        ratio = cues.parallax_comotion(
            a.image, b.image, a.face.detection.box, b.face.detection.box, config.passive.parallax
        )
        if ratio is not None:
            out["parallax_comotion"].append(ratio)
    temporal = check_temporal(frames, config.temporal)
    if "max_planar_residual" in temporal.scores:
        # Reported negated so that, like the other cues, higher means "more like an attack".
        out["neg_planar_residual"].append(-temporal.scores["max_planar_residual"])
    return dict(out)


def auc(attack: list[float], live: list[float]) -> float | None:
    """P(attack value > live value), ties half: 1 = the cue separates perfectly, 0.5 = chance."""
    if not attack or not live:
        return None
    a = np.asarray(attack)[:, None]
    b = np.asarray(live)[None, :]
    return float(np.mean((a > b) + 0.5 * (a == b)))


def cue_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cue: median per class and AUC of each attack type against bona fide."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for cue, vals in row["cues"].items():
            values[cue][row["label"]].extend(vals)
    table: dict[str, dict[str, Any]] = {}
    for cue, by_label in values.items():
        entry: dict[str, Any] = {
            f"median_{label}": round(float(np.median(v)), 4) for label, v in by_label.items()
        }
        for attack in ("print", "replay"):
            value = auc(by_label.get(attack, []), by_label.get("bona_fide", []))
            entry[f"auc_{attack}"] = None if value is None else round(value, 3)
        entry["n"] = {label: len(v) for label, v in by_label.items()}
        table[cue] = entry
    return table


ROW_FIELDS = {"policy", "bpcer", "bona_fide", "apcer", "attacks", "bpcer_by_lighting"}
"""The agreed figures of one policy run (the issue's keys, plus counts and lighting)."""


def check_row(row: dict[str, Any]) -> None:
    """Refuse a row that lacks the agreed fields or holds a rate outside [0, 1]."""
    if set(row) != ROW_FIELDS:
        raise ValueError(f"liveness.json fields {sorted(row)} are not the agreed ones")
    if set(row["apcer"]) != {"print", "replay"} or set(row["attacks"]) != {"print", "replay"}:
        raise ValueError("apcer and attacks must name exactly print and replay")
    rates = (row["bpcer"], *row["apcer"].values(), *row["bpcer_by_lighting"].values())
    if not all(0.0 <= v <= 1.0 for v in rates):
        raise ValueError(f"a rate lies outside [0, 1]: {rates}")


PACKS = {"default": "classical", "pad": "minifasnet"}
"""Each pack the bench runs the default policy with, and its row in liveness.json."""
SPLIT = (
    "by video: bona fide = windows of real2.webm (1 subject), replay = windows of fake2.webm "
    "and 2 screen stills, print = 1 printed photo and generated prints; dim and backlit "
    "bona fide windows generated from real2.webm; nothing fitted on any of it"
)


def evaluate_pack(pack: Path, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The agreed figures and the detail document of the default policy with one pack."""
    engine = FaceEngine(pack, threads=1)
    config = LivenessPolicyConfig()
    policy = LivenessPolicy(config, passive_scorer_for(engine, config))
    rows = [
        run(engine, policy, a, seed=i)
        for i, a in enumerate(attempts(args.window_s, args.response_s, args.still_frames))
    ]
    counts: dict[str, int] = defaultdict(int)
    accepted: dict[str, int] = defaultdict(int)
    challenged: dict[str, int] = defaultdict(int)
    for row in rows:
        key = row["label"] if row["condition"] == "normal" else f"bona_fide_{row['condition']}"
        counts[key] += 1
        accepted[key] += int(row["accepted"])
        challenged[key] += int(row["challenged"])
    bona = counts["bona_fide"]

    def bpcer(key: str) -> float:
        return (counts[key] - accepted[key]) / counts[key] if counts[key] else 1.0

    result = {
        "policy": policy.description,
        "bpcer": bpcer("bona_fide"),
        "bona_fide": bona,
        "apcer": {k: accepted[k] / counts[k] if counts[k] else 1.0 for k in ("print", "replay")},
        "attacks": {k: counts[k] for k in ("print", "replay")},
        "bpcer_by_lighting": {c: bpcer(f"bona_fide_{c}") for c in LIGHTING},
    }
    check_row(result)
    cues_measured = cue_table(rows)
    timing = {
        "observe_ms_per_frame_median": float(np.median([r["observe_ms_per_frame"] for r in rows])),
        "evaluate_ms_median": float(np.median([r["evaluate_ms"] for r in rows])),
    }
    for row in rows:
        del row["cues"]
    detail = {
        "summary": result,
        "pack": pack.name,
        "window_s": args.window_s,
        "challenged": dict(challenged),
        "cues": cues_measured,
        "timing": timing,
        "attempts": rows,
        "note": "bona fide: 1 subject, 1 clip; replay: the same subject re-filmed (1 clip) "
        "+ 2 screen stills moved rigidly; print: 1 printed photo + generated prints of "
        "the live subject; attempts are non-overlapping windows; nothing fitted "
        "(default config; the PAD pack is imported from the shared MiniFASNet files); "
        "a challenged live attempt answers with the unprompted frames that follow it, "
        "the worst case for BPCER; a smoke test, not a PAD claim",
    }
    return result, detail


def main(argv: list[str] | None = None) -> int:
    """Run the bench with each pack and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-s", type=float, default=1.5, help="attempt length, seconds")
    parser.add_argument("--response-s", type=float, default=8.0, help="challenge response, seconds")
    parser.add_argument("--still-frames", type=int, default=20, help="frames per generated attempt")
    parser.add_argument(
        "--pack",
        choices=sorted(PACKS),
        action="append",
        help="default: the open pack (no PAD model); pad: it plus the shared MiniFASNet "
        "(skipped without the weights); repeatable, both when not given",
    )
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no liveness data at {DATA}; nothing to evaluate")
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    details: dict[str, Any] = {}
    for key in args.pack or sorted(PACKS):
        pack = default_pack() if key == "default" else pad_pack()
        if pack is None:
            print(f"{key}: no MiniFASNet weights in ../shared; skipped")
            continue
        row, detail = evaluate_pack(pack, args)
        models[PACKS[key]] = {"pack": pack.name, **row}
        details[PACKS[key]] = detail
        print(f"== {pack.name}: challenged {detail['challenged']}")
    if "classical" not in models:
        raise SystemExit("the default pack's row is missing: run with --pack default")
    default = {k: v for k, v in models["classical"].items() if k != "pack"}
    result = {**default, "split": SPLIT, "models": models}
    (RESULTS / "liveness.json").write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(json.dumps(result, indent=2))
    write_result("liveness_detail", details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
