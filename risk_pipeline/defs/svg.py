"""Line-and-dot charts written as SVG text (no matplotlib): for exports of many plots, ~1 ms each."""

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 800,
    height: int = 500,
    x_format: Callable[[float], str] | None = None,
) -> str:
    """An SVG document of the series (lines and dots) on linear axes fitted to the data, with a legend;
    ``x_format`` writes an x tick's label (default: the tick's decimals)."""
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
            f"{html.escape(_label(v, x_dec) if x_format is None else x_format(float(v)))}</text>"
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


def _svg_open(width: int, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]


def bar_chart_svg(
    panels: Sequence[tuple[str, Sequence[str], np.ndarray, Sequence[str]]],
    *,
    horizontal: bool = False,
    reference: float | None = None,
    panel_width: int = 300,
    height: int = 260,
) -> str:
    """An SVG document of bar panels side by side, each ``(title, category labels, values, colours)``, on a
    value axis fitted to the values and zero; ``horizontal`` lays the bars along x (categories down the y
    axis); ``reference`` draws a black line at that value."""
    left, right, top, bottom = (190.0, 15.0, 25.0, 35.0) if horizontal else (70.0, 10.0, 25.0, 70.0)
    width = int(len(panels) * panel_width)
    plot_w, plot_h = panel_width - left - right, height - top - bottom
    out = _svg_open(width, height)
    for i, (title, labels, values, colours) in enumerate(panels):
        x0 = i * panel_width + left
        v = np.asarray(values, dtype=float)
        extra = [np.zeros(1)] + ([np.array([reference])] if reference is not None else [])
        lo, hi = _limits([v, *extra])
        n = max(len(labels), 1)
        span_v = plot_w if horizontal else plot_h

        def pv(x: float | np.ndarray, lo: float = lo, hi: float = hi, span_v: float = span_v) -> np.ndarray:
            return (np.asarray(x, dtype=float) - lo) / (hi - lo) * span_v

        out.append(
            f'<text x="{x0 + plot_w / 2:.1f}" y="{top - 8:.1f}" font-size="12" text-anchor="middle">'
            f"{html.escape(title)}</text>"
        )
        ticks, dec = nice_ticks(lo, hi, 5)
        zero = float(pv(0.0))
        band = (plot_h if horizontal else plot_w) / n
        for j, (value, colour) in enumerate(zip(v, colours, strict=True)):
            if not np.isfinite(value):
                continue
            a, b = sorted((zero, float(pv(value))))
            c = j * band + 0.1 * band
            if horizontal:
                out.append(
                    f'<rect x="{x0 + a:.1f}" y="{top + c:.1f}" width="{b - a:.1f}" height="{0.8 * band:.1f}" '
                    f'fill="{colour}"/>'
                )
            else:
                out.append(
                    f'<rect x="{x0 + c:.1f}" y="{top + plot_h - b:.1f}" width="{0.8 * band:.1f}" '
                    f'height="{b - a:.1f}" fill="{colour}"/>'
                )
        for j, label in enumerate(labels):
            c = (j + 0.5) * band
            if horizontal:
                out.append(
                    f'<text x="{x0 - 6:.1f}" y="{top + c + 4:.1f}" font-size="10" text-anchor="end">'
                    f"{html.escape(str(label))}</text>"
                )
            else:
                x, y = x0 + c, top + plot_h + 12
                out.append(
                    f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" text-anchor="end" '
                    f'transform="rotate(-45 {x:.1f} {y:.1f})">{html.escape(str(label))}</text>'
                )
        for t, p in zip(ticks, pv(ticks), strict=True):
            if horizontal:
                out.append(
                    f'<text x="{x0 + p:.1f}" y="{top + plot_h + 16:.1f}" font-size="10" text-anchor="middle">'
                    f"{_label(t, dec)}</text>"
                )
            else:
                out.append(
                    f'<text x="{x0 - 6:.1f}" y="{top + plot_h - p + 4:.1f}" font-size="10" text-anchor="end">'
                    f"{_label(t, dec)}</text>"
                )
        if reference is not None:
            r = float(pv(reference))
            if horizontal:
                out.append(f'<line x1="{x0 + r:.1f}" y1="{top}" x2="{x0 + r:.1f}" y2="{top + plot_h}" stroke="black"/>')
            else:
                out.append(
                    f'<line x1="{x0}" y1="{top + plot_h - r:.1f}" x2="{x0 + plot_w}" y2="{top + plot_h - r:.1f}" '
                    'stroke="black"/>'
                )
        out.append(f'<rect x="{x0}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def heat_map_svg(
    values: np.ndarray,
    colours: Sequence[str],
    *,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    x_label: str,
    y_label: str,
    bar_label: str,
    bar_range: tuple[float, float],
    bar_colours: Sequence[str],
    width: int = 640,
    height: int = 320,
) -> str:
    """An SVG document of a grid of cells (row 0 at the top) filled with ``colours`` (row-major), axis labels,
    and a colour bar from ``bar_range[0]`` (bottom, ``bar_colours[0]``) to ``bar_range[1]`` (top)."""
    left, right, top, bottom = 60.0, 110.0, 15.0, 60.0
    plot_w, plot_h = width - left - right, height - top - bottom
    rows, cols = values.shape
    cw, ch = plot_w / max(cols, 1), plot_h / max(rows, 1)
    out = _svg_open(width, height)
    for r in range(rows):
        for c in range(cols):
            out.append(
                f'<rect x="{left + c * cw:.1f}" y="{top + r * ch:.1f}" width="{cw + 0.3:.1f}" height="{ch + 0.3:.1f}" '
                f'fill="{colours[r * cols + c]}"/>'
            )
    for c, label in enumerate(x_labels):
        x, y = left + (c + 0.5) * cw, top + plot_h + 12
        out.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {x:.1f} {y:.1f})">{html.escape(label)}</text>'
        )
    for r, label in enumerate(y_labels):
        out.append(
            f'<text x="{left - 6:.1f}" y="{top + (r + 0.5) * ch + 4:.1f}" font-size="10" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
    out.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="12" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{html.escape(y_label)}</text>'
    )
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>')
    bx, bw, n = left + plot_w + 20.0, 16.0, len(bar_colours)
    for i, colour in enumerate(bar_colours):
        y = top + plot_h - (i + 1) * plot_h / n
        out.append(f'<rect x="{bx}" y="{y:.1f}" width="{bw}" height="{plot_h / n + 0.3:.1f}" fill="{colour}"/>')
    lo, hi = bar_range
    ticks, dec = nice_ticks(lo, hi, 5)
    for t in ticks:
        y = top + plot_h - (t - lo) / (hi - lo) * plot_h
        out.append(f'<text x="{bx + bw + 4}" y="{y + 4:.1f}" font-size="10">{_label(t, dec)}</text>')
    out.append(
        f'<rect x="{bx}" y="{top}" width="{bw}" height="{plot_h}" fill="none" stroke="black"/>'
        f'<text x="{bx + bw + 50}" y="{top + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 {bx + bw + 50} {top + plot_h / 2:.1f})">{html.escape(bar_label)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def stress_grid_heat_map_svg(table: pd.DataFrame, *, x_label: str, y_label: str) -> str:
    """``heat_map_svg`` of a stress grid pivoted to vol shocks (rows, top first) x spot shocks (columns, both as
    fractions, labelled in %), in matplotlib's RdYlGn symmetric about 0, the colour bar labelled P&L % NAV."""
    from matplotlib import colormaps, colors  # colours only: no figure is drawn

    values = table.to_numpy(float)
    limit = (float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0) or 1.0
    cmap = colormaps["RdYlGn"]
    return heat_map_svg(
        values,
        [colors.to_hex(c) for c in cmap((values.ravel() + limit) / (2 * limit))],
        x_labels=[f"{x:+.0%}" for x in table.columns],
        y_labels=[f"{y:+.0%}" for y in table.index],
        x_label=x_label,
        y_label=y_label,
        bar_label="P&L % NAV",
        bar_range=(-limit, limit),
        bar_colours=[colors.to_hex(c) for c in cmap(np.linspace(0.0, 1.0, 64))],
    )
