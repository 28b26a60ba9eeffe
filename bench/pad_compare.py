"""Passive PAD: the imported MiniFASNet against a model `jifang train liveness` trains here.

Both packs are scored by `jifang eval liveness`'s code at the live band each pack carries.
- MiniFASNet: the shared Silent-Face weights imported with `jifang models import-pad`;
  nothing is fitted, so every shared set is held out for it.
- trained: `jifang train liveness` on liveness_replay_frames (live/ and spoof_replay/, the
  only set large enough to train on), default options, then `jifang calibrate liveness` on
  the same set at its defaults (a site trains and calibrates on its own clips; the model
  carries no band of its own). Its held-out set is
  antispoof_samples: other people, other cameras, other attack media (split by source);
  its spoof_screen/ (faces shown on a screen) counts as spoof_replay, as bench/liveness.py
  counts it.
  Its figures on its own training set are not reported.
Writes bench/results/pad_compare.json: per pack, per held-out set, BPCER, APCER per attack
type and counts, the split, and which pack measures better on the set both hold out (the
larger of its BPCER and APCERs, lower is better). The shared sets are tiny (4 and 262 files,
1-3 subjects): a comparison, not a PAD claim.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, default_pack, model_dir, pad_pack, write_result

from calibration.liveness_calibrate import choose_bands, pad_calibration
from calibration.liveness_eval import evaluate_liveness, score_folder
from models.manifest import put_pad_calibration
from training import liveness as train_liveness

DATA = REPO.parent / "shared" / "data" / "liveness"
TRAIN_SET = "liveness_replay_frames"
HELD_OUT = "antispoof_samples"
MAX_APCER, MAX_BPCER = 0.05, 0.02
"""`jifang calibrate liveness`'s defaults."""


def worst(result: dict[str, Any]) -> float:
    """The larger of BPCER and each APCER (a missing class counts as 0)."""
    rates = [result["bpcer"], *result["apcer"].values()]
    return max(r for r in rates if r is not None) if any(r is not None for r in rates) else 1.0


def trained_pack(epochs: int) -> Path:
    """`jifang train liveness` on the training set into the model directory (rebuilt each
    run, seeded, so the figure is reproducible)."""
    out = model_dir() / "jifang-open-trained-pad"
    args = train_liveness.parse(
        [
            "--data",
            str(DATA / TRAIN_SET),
            "--out",
            str(out),
            "--base-pack",
            str(default_pack()),
            "--epochs",
            str(epochs),
            "--force",
            "--no-progress",
        ]
    )
    train_liveness.main(args)
    scored = score_folder(out, DATA / TRAIN_SET)
    bands = choose_bands(scored.items, MAX_APCER, MAX_BPCER)
    put_pad_calibration(out, "pad", pad_calibration(bands, scored, DATA / TRAIN_SET))
    return out


def as_classes(folder: Path, staged: Path) -> Path:
    """`folder` laid out in the eval's class folders, by links under `staged` (once)."""
    if (staged / folder.name).is_dir():
        return staged / folder.name
    renamed = {"spoof_screen": "spoof_replay"}
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        target = staged / folder.name / renamed.get(sub.name, sub.name)
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(f for f in sub.iterdir() if f.is_file()):
            (target / file.name).symlink_to(file)
    return staged / folder.name


def main(argv: list[str] | None = None) -> int:
    """Score both packs and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (the default)")
    args = parser.parse_args(argv)
    imported = pad_pack()
    if imported is None or not DATA.is_dir():
        print("no MiniFASNet weights or liveness data in ../shared; nothing to compare")
        return 1
    packs = {"minifasnet": imported, "trained": trained_pack(args.epochs)}
    held_out = {"minifasnet": [HELD_OUT, TRAIN_SET], "trained": [HELD_OUT]}
    figures: dict[str, Any] = {"packs": {}}
    staged = Path(tempfile.mkdtemp(prefix="pad_compare_"))
    results = {}
    try:
        for key, pack in packs.items():
            for name in held_out[key]:
                results[key, name] = evaluate_liveness(pack, as_classes(DATA / name, staged))
    finally:
        shutil.rmtree(staged)
    for key, pack in packs.items():
        sets = {}
        for name in held_out[key]:
            result = results[key, name]
            split = (
                "nothing fitted"
                if key == "minifasnet"
                else f"trained and calibrated on {TRAIN_SET} only"
            )
            sets[name] = {**result, "split": split}
        figures["packs"][key] = {"pack": pack.name, "sets": sets}
    scores = {k: worst(v["sets"][HELD_OUT]) for k, v in figures["packs"].items()}
    figures["compared_on"] = HELD_OUT
    figures["worst_rate"] = scores
    figures["better"] = min(scores, key=lambda k: (scores[k], k != "minifasnet"))
    write_result("pad_compare", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
