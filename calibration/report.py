"""A readable threshold report: Markdown with a DET curve and score histograms per set."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from calibration.metrics import det_curve
from calibration.threshold import SetThresholds, detail_json, method_text, score_summary
from contract.codes import ScoreKind

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 60


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _interval(ci: tuple[float, float] | None, pct: bool) -> str:
    if ci is None:
        return "—"
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if pct else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def plot_det(result: SetThresholds, path: Path) -> None:
    """DET curve (FNMR against FMR, log axes) with the supported operating points marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window from a report
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    if result.genuine_pairs and result.impostor_pairs:
        fmr, fnmr = det_curve(result.scores.genuine, result.scores.impostor)
        # Zero rates have no place on log axes; the measurable floor is one pair.
        shown = (fmr > 0) & (fnmr > 0)
        ax.plot(fmr[shown], fnmr[shown], label=result.name)
        floor = 1.0 / max(result.genuine_pairs, 1)
        for key, point in result.points.items():
            if point.fnmr is not None:
                y = max(point.fnmr, floor)
                ax.plot(point.fmr, y, "o")
                ax.annotate(f"FMR {key}", (point.fmr, y), fontsize=8)
    else:
        ax.text(0.5, 0.5, "no genuine pairs: no DET curve", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FMR (false match rate)")
    ax.set_ylabel("FNMR (false non-match rate)")
    ax.set_title(f"DET: {result.name}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histograms(result: SetThresholds, path: Path) -> None:
    """Genuine and impostor score densities with the threshold at each supported FMR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    everything = np.concatenate([result.scores.genuine, result.scores.impostor])
    bins = np.linspace(
        float(everything.min()), float(everything.max()), HISTOGRAM_BINS + 1
    ).tolist()
    if result.impostor_pairs:
        ax.hist(result.scores.impostor, bins=bins, density=True, alpha=0.5, label="impostor")
    if result.genuine_pairs:
        ax.hist(result.scores.genuine, bins=bins, density=True, alpha=0.5, label="genuine")
    for key, point in result.points.items():
        ax.axvline(point.threshold, linestyle="--", linewidth=1)
        ax.text(point.threshold, ax.get_ylim()[1] * 0.9, f" {key}", fontsize=8, rotation=90)
    ax.set_xlabel("cosine similarity" if result.score == ScoreKind.COSINE else "AS-norm score")
    ax.set_ylabel("density")
    ax.set_title(f"scores: {result.name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: list[SetThresholds], out_dir: Path, pack: str, contract_id: str) -> Path:
    """Write `report.md`, `report.json` and two PNGs per set into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = results[0].settings
    level = f"{100 * settings.ci_level:g}%"
    lines = [
        f"# Verification thresholds: pack `{pack}`",
        "",
        f"Contract `{contract_id}`. Target FMR {settings.target_fmr:g}. Each set is scored on "
        "its own: genuine and impostor distributions differ between populations, so they are "
        "never pooled.",
        "",
        "## Method",
        "",
        f"- {method_text(settings.bootstrap_replicates, results[0].score)}.",
        f"- Intervals are {level} two-sided. The Clopper-Pearson FNMR interval treats genuine "
        "pairs as independent and the threshold as exact, so it understates the uncertainty; "
        "the bootstrap over identities keeps pairs of one person together and carries the "
        "threshold's own spread into FNMR. Read the wider of the two.",
        "- An FMR is reported only when the set has at least 3/FMR impostor pairs: with fewer, "
        "zero observed false matches would not bound the rate at that level.",
        "",
    ]
    for r in results:
        safe = _safe(r.name)
        det_png, hist_png = f"{safe}-det.png", f"{safe}-scores.png"
        plot_det(r, out_dir / det_png)
        plot_histograms(r, out_dir / hist_png)
        acquired = ", ".join(f"{k} {v}" for k, v in r.acquisition.items())
        lines += [
            f"## Set `{r.name}`",
            "",
            f"Data `{r.root}`: {r.images} images, {r.identities} identities with a face; "
            f"acquisition: {acquired}; failure to acquire {_pct(r.failure_to_acquire)}.",
            "",
            f"- genuine: {score_summary(r.scores.genuine)}",
            f"- impostor: {score_summary(r.scores.impostor)}",
            f"- EER: {'—' if np.isnan(r.eer) else _pct(r.eer)}",
            "",
            f"| FMR | threshold | threshold {level} CI (bootstrap) | achieved FMR | FNMR | "
            f"FNMR {level} CI (Clopper-Pearson) | FNMR {level} CI (bootstrap) |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, p in r.points.items():
            lines.append(
                f"| {key} | {p.threshold:.4f} | {_interval(p.threshold_ci, False)} | "
                f"{p.achieved_fmr:.2e} | {_pct(p.fnmr)} | {_interval(p.fnmr_ci, True)} | "
                f"{_interval(p.fnmr_ci_bootstrap, True)} |"
            )
        for key, needed in r.unsupported.items():
            lines.append(
                f"| {key} | not claimed: {r.impostor_pairs} impostor pairs, needs {needed} "
                "| | | | | |"
            )
        lines += ["", f"![DET {r.name}]({det_png})", "", f"![scores {r.name}]({hist_png})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "report.json").write_text(
        json.dumps(detail_json(results, pack, contract_id), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    logger.info("wrote threshold report %s", path)
    return path
