"""Shared helpers for the benchmarks: where data and packs are, and how results are written."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
SHARED_FACES = REPO.parent / "shared" / "data" / "faces"


def model_dir() -> Path:
    """The model directory the benchmarks use (the tests' cache unless overridden)."""
    return Path(os.environ.get("JIFANG_TEST_MODEL_DIR", REPO / ".cache" / "model_packs"))


def default_pack() -> Path:
    """Build (if needed) and return the default pack."""
    from models.build_default import build_default_pack

    return build_default_pack(model_dir())


def mirrored_pack(base: Path, work: Path) -> Path:
    """The base pack with the mirrored recognizer and no adapter, built under `work`."""
    from training.adapt import AdapterProvenance, build_adapted_pack

    provenance = AdapterProvenance(source="none")
    return build_adapted_pack(base, None, work, "jifang-open-mirror", provenance, mirror=True)


def halves_by_person(count: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices 0..count-1 shuffled with `seed` and cut in two (first half floor(count/2))."""
    order = np.random.default_rng(seed).permutation(count)
    half = count // 2
    return [int(i) for i in order[:half]], [int(i) for i in order[half:]]


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Print the figures and write exactly them to bench/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    print(
        f"{name}: {datetime.now(UTC).isoformat(timespec='seconds')}, "
        f"{platform.machine()} with {os.cpu_count()} cpus, Python {platform.python_version()}"
    )
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


SHARED_PAD_WEIGHTS = REPO.parent / "shared" / "models" / "minifasnet"


def pad_pack() -> Path | None:
    """The default pack plus the site-supplied MiniFASNet PAD (`jifang models import-pad`),
    built into the model directory when missing; None without the weights in ../shared."""
    if not SHARED_PAD_WEIGHTS.is_dir():
        return None
    out = model_dir() / "jifang-open-pad"
    if not (out / "manifest.yaml").is_file():
        from training.pad_import import import_pad

        import_pad(default_pack(), SHARED_PAD_WEIGHTS, out)
    return out


def resampled(path: Path, fps: float) -> Iterator[np.ndarray]:
    """A clip's frames resampled by time to `fps` (the native frame nearest each instant),
    one at a time; SystemExit naming the file when it has none."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    native = capture.get(cv2.CAP_PROP_FPS) or 30.0
    given = index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            while round(given * native / fps) == index:
                given += 1
                yield frame
            index += 1
    finally:
        capture.release()
    if not given:
        raise SystemExit(f"{path}: no frames could be read")
