"""Line-and-dot charts written as SVG text (no matplotlib): for exports of many plots, ~1 ms each."""

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: matplotlib's default colour cycle (tab10), so the exports look like the inline matplotlib thumbnails.
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Series:
    """One legend entry: a line through ``(line_x, line_y)`` and dots at ``(dots_x, dots_y)``, one colour."""

    label: str
    line_x: np.ndarray
    line_y: np.ndarray
    dots_x: np.ndarray
    dots_y: np.ndarray


def nice_ticks(lo: float, hi: float, target: int = 6) -> tuple[np.ndarray, int]:
    """Ticks at 1, 2, 2.5 or 5 times a power of ten within ``[lo, hi]`` (about ``target`` of them), and the
    number of decimals that prints them exactly."""
    raw = (hi - lo) / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = (first + np.arange(math.floor(hi / step + 1e-9) - first + 1)) * step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if round(step / power, 6) == 2.5 else 0))
    return ticks, decimals


def _limits(values: list[np.ndarray]) -> tuple[float, float]:
    """Data range of the finite values with 5 % margins (matplotlib's default); a unit range if there is none."""
    finite = [v[np.isfinite(v)] for v in values]
    finite = [v for v in finite if v.size]
    if not finite:
        return 0.0, 1.0
    lo = float(min(v.min() for v in finite))
    hi = float(max(v.max() for v in finite))
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1.0):
        half = 0.5 * max(abs(lo), 1.0)
        return lo - half, hi + half
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _label(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0.0 else text.replace("-", "\u2212")


def _runs(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stretches of consecutive finite points (a NaN breaks the line)."""
    ok = np.isfinite(x) & np.isfinite(y)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
    return [(x[s:e], y[s:e]) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def line_chart_svg(
    series: Sequence[Series], *, title: str, x_label: str, y_label: str, width: int = 800, height: int = 500
) -> str:
    """An SVG document of the series (lines and dots) on linear axes fitted to the data, with a legend."""
    left, right, top, bottom = 70.0, 15.0, 30.0, 50.0
    plot_w, plot_h = width - left - right, height - top - bottom
    x_lo, x_hi = _limits([a for s in series for a in (s.line_x, s.dots_x)])
    y_lo, y_hi = _limits([a for s in series for a in (s.line_y, s.dots_y)])

    def px(x: np.ndarray | float) -> np.ndarray:
        return left + (np.asarray(x, dtype=float) - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: np.ndarray | float) -> np.ndarray:
        return top + (y_hi - np.asarray(y, dtype=float)) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<clipPath id="plot"><rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/></clipPath>',
        f'<text x="{left + plot_w / 2:.1f}" y="{top - 10:.1f}" font-size="13" text-anchor="middle">'
        f"{html.escape(title)}</text>",
    ]
    x_ticks, x_dec = nice_ticks(x_lo, x_hi, 8)
    for v, p in zip(x_ticks, px(x_ticks), strict=True):
        out.append(
            f'<line x1="{p:.1f}" y1="{top + plot_h}" x2="{p:.1f}" y2="{top + plot_h + 5}" stroke="black"/>'
            f'<text x="{p:.1f}" y="{top + plot_h + 18}" font-size="11" text-anchor="middle">'
            f"{_label(v, x_dec)}</text>"
        )
    y_ticks, y_dec = nice_ticks(y_lo, y_hi, 6)
    for v, p in zip(y_ticks, py(y_ticks), strict=True):
        out.append(
            f'<line x1="{left - 5}" y1="{p:.1f}" x2="{left}" y2="{p:.1f}" stroke="black"/>'
            f'<text x="{left - 8}" y="{p + 4:.1f}" font-size="11" text-anchor="end">{_label(v, y_dec)}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 12}" font-size="12" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">{html.escape(y_label)}</text>'
    )
    out.append('<g clip-path="url(#plot)">')
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for rx, ry in _runs(np.asarray(s.line_x, dtype=float), np.asarray(s.line_y, dtype=float)):
            points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(rx), py(ry), strict=True))
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
        dx, dy = np.asarray(s.dots_x, dtype=float), np.asarray(s.dots_y, dtype=float)
        ok = np.isfinite(dx) & np.isfinite(dy)
        out.extend(
            f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{colour}"/>'
            for a, b in zip(px(dx[ok]), py(dy[ok]), strict=True)
        )
    out.append("</g>")
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>')
    if series:
        longest = max(len(s.label) for s in series)
        box_w, box_h = 34.0 + 6.5 * longest, 6.0 + 14.0 * len(series)
        bx, by = left + plot_w - box_w - 8.0, top + 8.0
        out.append(
            f'<rect x="{bx:.1f}" y="{by:.1f}" width="{box_w:.1f}" height="{box_h:.1f}" fill="white" '
            'fill-opacity="0.85" stroke="#cccccc"/>'
        )
        for i, s in enumerate(series):
            colour = COLOURS[i % len(COLOURS)]
            y = by + 13.0 + 14.0 * i
            out.append(
                f'<line x1="{bx + 6:.1f}" y1="{y - 4:.1f}" x2="{bx + 24:.1f}" y2="{y - 4:.1f}" stroke="{colour}" '
                f'stroke-width="1.5"/><text x="{bx + 29:.1f}" y="{y:.1f}" font-size="10">'
                f"{html.escape(s.label)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"
