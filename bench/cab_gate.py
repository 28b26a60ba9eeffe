"""Cab start-up: time to decide, challenge rate and attacks, with the default policy.

- decision_ms: from the first frame with a face to the decision (event committed, output
  driven), frames arriving at the camera's rate (camera.fps) as they would in the cab, with
  the default liveness policy: passive + temporal, the overlapped decision, the challenge
  only when the passive score is in doubt;
- live attempts: a simulated live operator who follows the prompts (the astronaut photo,
  animated), and, when ../shared is present, the real live clip
  liveness_replay_frames/live/real2.webm (a frame from its first second enrolled as the
  template; starts every 0.25 s on the rest, resampled to the camera rate; a recorded clip
  cannot answer a challenge, so a challenge there is a refusal);
- attacks (must never be authorized): the real replay clip spoof_replay/fake2.webm (starts
  every second) and printed photos of both enrolled faces, moved rigidly (generated);
- passive_pad: the PAD component in use. With ../shared present that is the MiniFASNet pair
  imported from ../shared/models/minifasnet at the thresholds the import carries (no site
  calibration, nothing fitted); without it the default pack has none and every start asks
  for the challenge (reported under "without_pad" too);
- reverify_fps: frames/s the gate sustains analysing frames back to back (detect, quality,
  embed) as in re-verification mode;
- rss_mb: peak resident memory of this process, which holds the whole agent.

Usage: python bench/cab_gate.py [--runs 20] [--gallery 50]
Writes bench/results/cab_gate.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import REPO, RESULTS, default_pack, pad_pack, resampled

CLIPS = REPO.parent / "shared" / "data" / "liveness" / "liveness_replay_frames"


class PacedFeed:
    """Another feed's frames delivered at a fixed rate in real time, like a camera."""

    def __init__(self, inner: Any, fps: float) -> None:
        self.inner, self.period, self.index = inner, 1.0 / fps, 0
        self.start = time.monotonic()
        self.first_face_t: float | None = None

    def next_frame(self, timeout_s: float) -> Any:
        from edge_agent.cab.types import Frame

        due = self.start + self.index * self.period
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        got = self.inner.next_frame(timeout_s)
        if got is None:
            return None
        frame = Frame(got.image, due, self.index)
        if self.first_face_t is None:
            self.first_face_t = time.monotonic()
        self.index += 1
        return frame


class ClipFeed:
    """A recorded clip from a start offset; nothing once it has ended (the camera sees no one).

    Frames are kept JPEG-encoded and decoded as they are read, as a camera delivers them, so
    the clips do not count towards the agent's memory.
    """

    def __init__(self, frames: list[bytes]) -> None:
        self.frames, self.index = frames, 0

    def next_frame(self, timeout_s: float) -> Any:
        from edge_agent.cab.types import Frame

        if self.index >= len(self.frames):
            time.sleep(min(timeout_s, 0.05))
            return None
        image = cv2.imdecode(np.frombuffer(self.frames[self.index], np.uint8), cv2.IMREAD_COLOR)
        frame = Frame(image, self.index / 15.0, self.index)
        self.index += 1
        return frame


def encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def read_clip(path: Path, fps: float) -> list[bytes]:
    """A clip's frames resampled by time to `fps`, JPEG-encoded as they are read (a decoded
    clip would weigh more than the agent)."""
    return [encode(frame) for frame in resampled(path, fps)]


def frame_640x480(image: np.ndarray) -> np.ndarray:
    face = cv2.resize(image, (480, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_REPLICATE))


@dataclass
class Tally:
    """Attempts of one kind."""

    decision_ms: list[float] = field(default_factory=list)
    authorized: int = 0
    challenged: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, ms: float, challenged: bool) -> None:
        self.decision_ms.append(ms)
        self.authorized += reason == "AUTHORIZED"
        self.challenged += challenged
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        n = len(self.decision_ms)
        return {
            "attempts": n,
            "authorized": self.authorized,
            "challenged": self.challenged,
            "decision_ms_median": round(statistics.median(self.decision_ms), 1) if n else None,
            "decision_ms_p95": round(float(np.percentile(self.decision_ms, 95)), 1) if n else None,
            "reasons": self.reasons,
        }


class Bench:
    """One gate over one pack with a gallery of the enrolled faces plus random others."""

    def __init__(self, pack: Path, enrolled: dict[str, np.ndarray], gallery: int, tmp: Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from contract.auth import public_key_b64, sign_envelope
        from contract.codes import CertificateStatus, DeviceKind
        from contract.messages import (
            CategoryRule,
            CertificateInfo,
            DeviceConfig,
            EmbeddingContract,
            GalleryOperator,
            GallerySnapshot,
            GalleryTemplate,
        )
        from edge_agent.cab.agent import build_gate
        from edge_agent.cab.liveness import SimulatedDisplay
        from edge_agent.config import parse_cab_config
        from models.engine import FaceEngine
        from models.manifest import CalibrationBlock
        from models.placeholder import placeholder_calibration
        from models.vectors import l2_normalize

        self.engine = engine = FaceEngine(pack, threads=2)
        vectors = {name: self._embed(image) for name, image in enrolled.items()}
        rng = np.random.default_rng(0)
        dim = next(iter(vectors.values())).shape
        while len(vectors) < gallery:
            vectors[f"random-{len(vectors)}"] = l2_normalize(rng.normal(size=dim), np.float32)
        today = datetime.now(UTC).date()
        operators, templates = [], []
        for i, (name, vec) in enumerate(vectors.items()):
            operators.append(
                GalleryOperator(
                    operator_id=name,
                    display_name=name,
                    id_number_masked="3701**********0000",
                    certificates=(
                        CertificateInfo(
                            certificate_no=f"TS-{i}",
                            category="N1",
                            issue_date=today - timedelta(days=100),
                            expiry_date=today + timedelta(days=100),
                            status=CertificateStatus.VALID,
                        ),
                    ),
                )
            )
            templates.append(
                GalleryTemplate(
                    template_id=f"t-{i}",
                    operator_id=name,
                    embedding=tuple(float(v) for v in vec),
                    quality=0.9,
                    source_sha256=hashlib.sha256(vec.tobytes()).hexdigest(),
                )
            )
        key = Ed25519PrivateKey.generate()
        contract = EmbeddingContract(
            pack_name=engine.manifest.name,
            pack_version=engine.manifest.version,
            contract_id=engine.contract_id,
            dim=engine.manifest.embedding.dim,
        )
        self.config = config = parse_cab_config(
            {
                "device": {"id": "BENCH-1", "kind": "forklift", "site_id": "s"},
                "server": {
                    "url": "http://127.0.0.1:9",
                    "device_key": "k",
                    "public_key": public_key_b64(key.public_key()),
                },
                "models": {"calibration": "bench"},
                "camera": {"source": 0, "width": 640, "height": 480},
                "quality": {"min_face_px": 60},
                # 1:N over the whole bench gallery: the risk bound is opened for the bench only.
                "claims": {"max_1n_risk": 1.0},
                "store": {"dir": str(tmp)},
            }
        )
        block = CalibrationBlock(
            calibrations={"bench": placeholder_calibration(engine.contract_id)}
        )
        self.parts = build_gate(config, engine=engine, calibrations=block)
        snapshot = GallerySnapshot(
            device_id="BENCH-1",
            version=1,
            contract=contract,
            generated_at=datetime.now(UTC),
            operators=tuple(operators),
            templates=tuple(templates),
        )
        cache = self.parts.cache
        cache.install_snapshot(
            sign_envelope(key, "k", "gallery.snapshot", snapshot.model_dump_json())
        )
        cfg = DeviceConfig(
            device_id="BENCH-1",
            kind=DeviceKind.FORKLIFT,
            site_id="s",
            config_version=1,
            issued_at=datetime.now(UTC),
            accepted_categories=(CategoryRule(category="N1"),),
        )
        cache.install_config(sign_envelope(key, "k", "device.config", cfg.model_dump_json()))
        verifier = self.parts.gate.verifier
        assert verifier is not None, "the gate has no verifier (model fault)"
        self.verifier = verifier
        display = verifier.liveness.display
        if not isinstance(display, SimulatedDisplay):
            raise SystemExit(f"the bench needs the simulated cab display, not {type(display)}")
        self.screen: SimulatedDisplay = display

    def _embed(self, image: np.ndarray) -> np.ndarray:
        got = self.engine.acquire(image)
        return np.asarray(self.engine.embed(got.image, got.face), np.float32)

    def start(self, inner: Any, tally: Tally) -> str:
        """One paced start; its reason."""
        shown = len(self.screen.shown)
        feed = PacedFeed(inner, self.config.camera.fps)
        decision = self.parts.gate.request_start(feed)
        done = time.monotonic()
        assert feed.first_face_t is not None
        tally.add(
            decision.reason.value, (done - feed.first_face_t) * 1000, len(self.screen.shown) > shown
        )
        self.parts.gate.engine_stopped()
        return decision.reason.value

    def simulated_operator(self, scene: np.ndarray) -> Any:
        from edge_agent.cab.simclip import SimulatedOperator
        from models.liveness import observe

        seen = observe(self.engine, scene, 0.0)
        assert seen is not None and seen.dense is not None
        return SimulatedOperator(
            scene, seen.face.detection.box, seen.dense.points, self.screen, self.config.camera.fps
        )

    def reverify_fps(self, frames: list[np.ndarray], seconds: float) -> float:
        from edge_agent.cab.sources import ReplayFeed

        feed = ReplayFeed(frames, fps=1000.0)
        analysed = 0
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            frame = feed.next_frame(0.0)
            assert frame is not None
            self.verifier.analyzer.check(frame.image)
            analysed += 1
        return analysed / (time.monotonic() - began)


def run_pack(pack: Path, args: argparse.Namespace, real: bool) -> tuple[dict[str, Tally], Bench]:
    """Every attempt on one pack, by attempt kind."""
    from models.liveness.synthetic import rigid_sequence

    astronaut = astronaut_scene()
    enrolled = {"astronaut": astronaut}
    fps = 15.0
    live_clip: list[bytes] = []
    replay_clip: list[bytes] = []
    if real:
        live_clip = read_clip(CLIPS / "live" / "real2.webm", fps)
        replay_clip = read_clip(CLIPS / "spoof_replay" / "fake2.webm", fps)
        enrolled["real2"] = decode(live_clip[int(0.5 * fps)])
    tmp = Path(tempfile.mkdtemp(prefix="cab-gate-bench-"))
    bench = Bench(pack, enrolled, args.gallery, tmp)
    assert bench.config.camera.fps == fps
    tallies = {name: Tally() for name in ("simulated_live", "real_live", "replay", "print")}
    bench.start(bench.simulated_operator(astronaut), Tally())  # warm-up
    for _ in range(args.runs):
        bench.start(bench.simulated_operator(astronaut), tallies["simulated_live"])
    if real:
        for offset in range(int(1.0 * fps), len(live_clip) - int(2.0 * fps), int(0.25 * fps)):
            bench.start(ClipFeed(live_clip[offset:]), tallies["real_live"])
        for offset in range(0, len(replay_clip) - int(3.0 * fps), int(fps)):
            bench.start(ClipFeed(replay_clip[offset:]), tallies["replay"])
    stills = [astronaut, *([decode(live_clip[len(live_clip) // 2])] if real else [])]
    for i, still in enumerate(stills):
        for seed in range(3):
            seq = rigid_sequence(np.asarray(still, np.uint8), 60, fps=fps, seed=10 * i + seed)
            bench.start(ClipFeed([encode(image) for image, _ in seq]), tallies["print"])
    return {k: t for k, t in tallies.items() if t.decision_ms}, bench


def decode(data: bytes) -> np.ndarray:
    return np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)


def astronaut_scene() -> np.ndarray:
    from skimage import data

    return frame_640x480(np.ascontiguousarray(data.astronaut()[:, :, ::-1]))


def figures(tallies: dict[str, Tally], bench: Bench, fps: float) -> dict[str, Any]:
    """The result keys for one pack."""
    live = [tallies[k] for k in ("simulated_live", "real_live") if k in tallies]
    attacks = [tallies[k] for k in ("replay", "print") if k in tallies]
    ms = [v for t in live for v in t.decision_ms]
    attempts = sum(len(t.decision_ms) for t in live)
    liveness = bench.verifier.liveness
    return {
        "pack": bench.engine.manifest.name,
        "policy": liveness.name,
        "decision_ms_median": round(statistics.median(ms), 1),
        "decision_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "challenge_rate": round(sum(t.challenged for t in live) / attempts, 3),
        "passive_pad": liveness.passive_pad,
        "live_attempts": attempts,
        "live_authorized": sum(t.authorized for t in live),
        "attacks_authorized": sum(t.authorized for t in attacks),
        "attack_attempts": sum(len(t.decision_ms) for t in attacks),
        "reverify_fps": round(fps, 1),
        "per_clip": {k: t.summary() for k, t in tallies.items()},
    }


def measure(pack: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every attempt on one pack, in this process (the agent's whole memory is its RSS)."""
    tallies, bench = run_pack(pack, args, real=CLIPS.is_dir())
    moving = bench.simulated_operator(astronaut_scene()).moving
    result = figures(tallies, bench, bench.reverify_fps(moving, args.reverify_s))
    bench.parts.close()
    result["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return result


def in_child(pack: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`measure` in a fresh interpreter, so that one pack's memory is not the other's."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--pack", str(pack), "--out", str(out)]
        command += ["--runs", str(args.runs), "--gallery", str(args.gallery)]
        command += ["--reverify-s", str(args.reverify_s)]
        subprocess.run(command, check=True)
        loaded: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="simulated live starts")
    parser.add_argument("--gallery", type=int, default=50, help="operators in the gallery")
    parser.add_argument("--reverify-s", type=float, default=5.0)
    parser.add_argument("--pack", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pack is not None:
        args.out.write_text(json.dumps(measure(args.pack, args)), encoding="utf-8")
        return

    with_pad = pad_pack()
    plain = in_child(default_pack(), args)
    result = plain if with_pad is None else in_child(with_pad, args)
    result["without_pad"] = plain
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus"
    print(
        f"{result['pack']}: median {result['decision_ms_median']} ms, p95 "
        f"{result['decision_ms_p95']} ms, challenge {100 * result['challenge_rate']:.0f}% of "
        f"{result['live_attempts']} live starts, {result['attacks_authorized']} of "
        f"{result['attack_attempts']} attacks authorized, RSS {result['rss_mb']} MB; without "
        f"PAD median {plain['decision_ms_median']} ms, challenge "
        f"{100 * plain['challenge_rate']:.0f}%, {plain['attacks_authorized']} of "
        f"{plain['attack_attempts']} attacks authorized"
    )
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "cab_gate.json"
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
