"""fp32 against statically quantized INT8 recognizer of the default pack, on this machine.

Runs `calibration.quantize` (the code behind `jifang calibrate quantize`) on the internal
face sets: ms per face (batch of one, median of interleaved runs, same thread count for
both), embedding cosine to fp32, and FNMR at FMR 1e-3 per set with each model at its own
threshold. `fnmr_delta` is the largest INT8-minus-fp32 FNMR over the sets (the figure the
gate judges). The INT8 pack is written to <model dir>/jifang-open-int8 when the gate passes.

One thread by default: on a shared two-core machine, two intra-op threads per model are
often descheduled mid-run, which inflates the longer fp32 run far more than INT8 and would
overstate the speed-up.

Writes bench/results/quantize.json with exactly the keys checks read:
{"fp32_ms_per_face", "int8_ms_per_face", "speedup", "fnmr_delta"}; the rest is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from _common import RESULTS, SHARED_FACES, default_pack

from calibration.quantize import QuantizeSettings, load_chip_sets, quantize_pack, result_json
from models.engine import FaceEngine

DEFAULT_SETS = ["casia_ea_dev", "lfw_east_asian28_gray", "lfw_7people", "orl_att_faces"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=DEFAULT_SETS, help="face sets to judge on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=500, help="timed runs per model")
    parser.add_argument("--max-fnmr-rise", type=float, default=0.01)
    args = parser.parse_args()
    if not SHARED_FACES.is_dir():
        print(f"{SHARED_FACES} not present: the FNMR change needs labelled face sets")
        return 2
    pack = default_pack()
    engine = FaceEngine(pack, threads=args.threads)
    settings = QuantizeSettings(
        threads=args.threads, timing_runs=args.runs, max_fnmr_rise=args.max_fnmr_rise
    )
    sets = load_chip_sets(engine, SHARED_FACES, args.sets)
    result = quantize_pack(
        engine, sets, pack.parent / f"{pack.name}-int8", settings, "shared faces", force=True
    )
    details = result_json(result)
    details["machine"] = f"{platform.machine()} {os.cpu_count()} cpus, {platform.processor()}"
    print(json.dumps(details, indent=2))
    summary = result.summary()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "quantize.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")
    if result.refused:
        print(f"refused: {result.refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
