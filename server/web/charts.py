"""Server-side SVG charts and image geometry for the pages (no chart library, no JavaScript)."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from datetime import date
from html import escape

logger = logging.getLogger(__name__)

# A colour-blind-safe qualitative palette (Okabe-Ito); series beyond it repeat colours.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True)
class ChartSize:
    """Geometry of a bar chart in SVG user units."""

    width: int = 720
    height: int = 240
    left: int = 36
    bottom: int = 28
    top: int = 10
    legend_width: int = 170


def _nice_max(value: int) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def stacked_bars(
    days: list[date],
    series: dict[str, list[int]],
    title: str,
    size: ChartSize | None = None,
) -> str:
    """An SVG stacked bar chart: one bar per day, one colour per series, with a legend."""
    size = size or ChartSize()
    plot_w = size.width - size.left - size.legend_width
    plot_h = size.height - size.top - size.bottom
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = _nice_max(max(totals, default=0))
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {size.width} {size.height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    base_y = size.top + plot_h
    # About five gridlines at round values: 0-5 by 1, 0-10 by 2, 0-20 by 5, ...
    step = _nice_max(max(1, -(-top // 5)))
    for tick in range(0, top + 1, step):
        y = base_y - plot_h * tick / top
        parts.append(
            f'<line x1="{size.left}" x2="{size.left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid"/><text x="{size.left - 4}" y="{y + 4:.1f}" class="tick" '
            f'text-anchor="end">{tick}</text>'
        )
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    for i, day in enumerate(days):
        x = size.left + i * slot + (slot - bar_w) / 2
        y = base_y
        for name, values in series.items():
            if values[i] <= 0:
                continue
            h = plot_h * values[i] / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colours[name]}"><title>{escape(name)} {day.isoformat()}: '
                f"{values[i]}</title></rect>"
            )
        # Label every day when they fit, else about seven labels, always including the last.
        every = max(1, round(len(days) / 7))
        if (len(days) - 1 - i) % every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{base_y + 16}" class="tick" '
                f'text-anchor="middle">{day.month}/{day.day}</text>'
            )
    legend_x = size.width - size.legend_width + 12
    for i, name in enumerate(series):
        y = size.top + 6 + i * 18
        parts.append(
            f'<rect x="{legend_x}" y="{y}" width="12" height="12" fill="{colours[name]}"/>'
            f'<text x="{legend_x + 18}" y="{y + 11}" class="legend">{escape(name)} '
            f"({sum(series[name])})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def score_bar(
    score: float, threshold: float, width: int = 240, height: int = 22, kind: str = "cosine"
) -> str:
    """An SVG bar placing a score beside its threshold: a cosine on the 0..1 scale, a
    normalised score on 0..twice the threshold (or its own value, when higher)."""
    top = 1.0 if kind == "cosine" else max(2.0 * threshold, score, 1e-9)
    clamp = min(max(score / top, 0.0), 1.0)
    mark = min(max(threshold / top, 0.0), 1.0)
    passed = score >= threshold
    colour = "#009E73" if passed else "#D55E00"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="scorebar" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-hidden="true">'
        f'<rect x="0" y="4" width="{width}" height="{height - 8}" fill="#e8e8e8"/>'
        f'<rect x="0" y="4" width="{width * clamp:.1f}" height="{height - 8}" fill="{colour}"/>'
        f'<line x1="{width * mark:.1f}" x2="{width * mark:.1f}" y1="0" y2="{height}" '
        f'stroke="#000" stroke-width="2"/></svg>'
    )


class ImageSizeError(ValueError):
    """The bytes are not a PNG or JPEG whose size can be read."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG or JPEG from its header, without decoding the pixels."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ImageSizeError(f"JPEG marker expected at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
            # SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return int(width), int(height)
            pos += 2 + length
        raise ImageSizeError("JPEG without a frame header")
    raise ImageSizeError("not a PNG or JPEG image")
