"""Fine-tune the default pack's recognizer on ../shared/data/faces and report before/after.

Identities are split per set (seeded): a fraction of each set's identities is held out and
never trained on; verification (FNMR at the FMRs the pairs support, EER) is measured on
those held-out identities with the base weights ("before") and after every epoch. Sized
for 2 shared CPU cores (a few minutes). Everything it writes goes to --work, outside the
repository: it is learned from internal data and is never committed.

    PYTHONPATH=. python bench/train_finetune_faces.py [--sets casia_ea_dev lfw_east_asian28_gray]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _common import SHARED_FACES, default_pack

from training import recognizer


def _edge_check(
    work: Path, val: dict[str, list[str]], base: str, pack: Path
) -> dict[str, dict[str, Any]]:
    """Evaluate base and new packs with the edge engine on the held-out identity folders."""
    from calibration.evaluate import evaluate
    from models.engine import FaceEngine

    root = work / "held_out"
    for set_name, identities in val.items():
        for identity in identities:
            link = root / set_name / identity
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(SHARED_FACES / set_name / identity, target_is_directory=True)
    return {
        label: evaluate(FaceEngine(path, threads=2), root, progress=False)["sets"]
        for label, path in (("before", Path(base)), ("after", pack))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["casia_ea_dev", "lfw_east_asian28_gray"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/jifang-train-faces"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-layers", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--val-fraction", type=float, default=0.4)
    parser.add_argument("--max-steps", type=int, default=0)
    known, extra = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not SHARED_FACES.is_dir():
        print(f"skipped: {SHARED_FACES} not present")
        return 0
    # A folder of links: the trainer reads "a folder of sets", and only the chosen ones.
    data = known.work / "data"
    shutil.rmtree(known.work, ignore_errors=True)
    data.mkdir(parents=True)
    for name in known.sets:
        (data / name).symlink_to(SHARED_FACES / name, target_is_directory=True)
    args = recognizer.parse(
        [
            "--data",
            str(data),
            "--out",
            str(known.work / "pack"),
            "--base-pack",
            str(default_pack()),
            "--epochs",
            str(known.epochs),
            "--train-layers",
            str(known.train_layers),
            "--lr",
            str(known.lr),
            "--val-fraction",
            str(known.val_fraction),
            "--max-steps",
            str(known.max_steps),
            "--threads",
            "2",
            *extra,
        ]
    )
    started = time.monotonic()
    result = recognizer.main(args)
    seconds = time.monotonic() - started
    split = json.loads((known.work / "pack.run" / "split.json").read_text())
    print(f"\nsplit (seed {args.seed}): held-out identities per set, never trained on")
    for name in known.sets:
        print(f"  {name}: train {len(split['train'][name])} ids, val {len(split['val'][name])} ids")
    print(f"  images: train {split['train_images']}, val {split['val_images']}")
    rows = [("before", result["baseline"])] + [
        (f"epoch {e['epoch']}", e["val"]) for e in result["epochs"]
    ]
    print(
        f"\n{'':10} {'set':24} {'gen':>5} {'imp':>6} {'EER':>7} {'FNMR@1e-2':>10} {'FNMR@1e-3':>10}"
    )
    for label, val in rows:
        for name, rec in val.items():
            fnmr = rec["fnmr_at_fmr"]
            cells = [f"{100 * fnmr[k]:.1f}%" if k in fnmr else "-" for k in ("1e-2", "1e-3")]
            print(
                f"{label:10} {name:24} {rec['genuine_pairs']:>5} {rec['impostor_pairs']:>6} "
                f"{100 * rec['eer']:>6.2f}% {cells[0]:>10} {cells[1]:>10}"
            )
    for e in result["epochs"]:
        print(
            f"epoch {e['epoch']}: loss {e['loss']:.3f}, train acc {e['train_acc']:.2f}, {e['seconds']:.0f} s"
        )
    print(f"export check: min cosine {result['export_check']['min_cosine']:.6f}")
    print("\nthrough the edge pipeline (FaceEngine + calibration.evaluate), held-out identities:")
    edge = _edge_check(known.work, split["val"], args.base_pack, Path(result["pack"]))
    for label, sets in edge.items():
        for name, rec in sets.items():
            fnmr = rec["fnmr_at_fmr"].get("1e-2")
            cell = "-" if fnmr is None else f"{100 * fnmr:.1f}%"
            print(f"  {label:6} {name:24} EER {100 * rec['eer']:5.2f}%  FNMR@1e-2 {cell}")
    print(f"total {seconds:.0f} s; pack and run folder under {known.work} (not committed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
