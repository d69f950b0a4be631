"""SVG charts (risk_pipeline.defs.svg: lines, bars, heat maps) and the exported smile pages of vol_surfaces.

Ticks are checked against hand-picked values; the documents are parsed as XML and their elements counted
against the series given.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from risk_pipeline.defs.svg import Series, bar_chart_svg, heat_map_svg, line_chart_svg, nice_ticks
from risk_pipeline.defs.volatility.surfaces import export_smiles, full_smiles, smiles_index
from risk_pipeline.quant.surfaces import fit_underlying
from risk_pipeline.resources import ExportsResource

SVG = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_by_hand() -> None:
    ticks, decimals = nice_ticks(-1.05, 0.67, 8)  # raw step 0.215 -> 0.25
    np.testing.assert_allclose(ticks, [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5])
    assert decimals == 2
    ticks, decimals = nice_ticks(9.3, 130.1, 6)  # raw step 20.1 -> 25
    np.testing.assert_allclose(ticks, [25.0, 50.0, 75.0, 100.0, 125.0])
    assert decimals == 0
    ticks, decimals = nice_ticks(0.013, 0.061, 5)  # raw step 0.0096 -> 0.01
    np.testing.assert_allclose(ticks, [0.02, 0.03, 0.04, 0.05, 0.06])
    assert decimals == 2


def test_line_chart_elements_match_the_series() -> None:
    x = np.linspace(-0.5, 0.5, 11)
    with_gap = np.where(np.arange(11) == 5, np.nan, 20.0 + 10.0 * x**2)
    series = [
        Series("2027-01-15", x, 30.0 + 5.0 * x, np.array([-0.2, 0.1, np.nan]), np.array([29.0, 30.5, 31.0])),
        Series("2027-<02>", x, with_gap, np.array([0.0]), np.array([20.0])),
    ]
    root = ET.fromstring(line_chart_svg(series, title="X & Y smiles", x_label="ln(K/F)", y_label="vol (%)"))
    assert root.tag == f"{SVG}svg"
    polylines = root.iter(f"{SVG}polyline")
    assert len(list(polylines)) == 3  # the NaN splits the second line in two
    assert len(list(root.iter(f"{SVG}circle"))) == 3  # the NaN dot is left out
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "X & Y smiles" in texts and "2027-<02>" in texts and "2027-01-15" in texts
    # every point is inside the plotting area (data limits with margins)
    for line in root.iter(f"{SVG}polyline"):
        pts = np.array([p.split(",") for p in line.get("points").split()], dtype=float)
        assert (pts[:, 0] >= 70.0).all() and (pts[:, 0] <= 785.0).all()
        assert (pts[:, 1] >= 30.0).all() and (pts[:, 1] <= 450.0).all()


def test_bar_chart_bar_lengths_are_proportional_to_the_values() -> None:
    """Bars start at zero; their lengths are in the ratio of the values (|-2| : 1 : 4), one bar a value."""
    for horizontal in (False, True):
        svg = bar_chart_svg(
            [("util", ["a", "b<", "c"], np.array([-2.0, 1.0, 4.0]), ["#111111"] * 3)],
            horizontal=horizontal,
            reference=1.0,
        )
        root = ET.fromstring(svg)
        bars = [r for r in root.iter(f"{SVG}rect") if r.get("fill") == "#111111"]
        lengths = np.array([float(r.get("width" if horizontal else "height")) for r in bars])
        np.testing.assert_allclose(lengths / lengths[1], [2.0, 1.0, 4.0], rtol=2e-2)  # 0.1 px rounding
        texts = [t.text for t in root.iter(f"{SVG}text")]
        assert "util" in texts and "b<" in texts
        assert len(list(root.iter(f"{SVG}line"))) == 1  # the reference line


def test_heat_map_has_one_cell_a_value_in_the_given_colours() -> None:
    colours = [f"#0000{i:02x}" for i in range(6)]
    root = ET.fromstring(
        heat_map_svg(
            np.arange(6.0).reshape(2, 3),
            colours,
            x_labels=["-10%", "+0%", "+10%"],
            y_labels=["+20%", "-20%"],
            x_label="spot shock",
            y_label="vol shock",
            bar_label="P&L % NAV",
            bar_range=(-5.0, 5.0),
            bar_colours=["#ff0000", "#00ff00"],
        )
    )
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert [f for f in fills if f in colours] == colours  # row-major
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"-10%", "+20%", "spot shock", "vol shock", "P&L % NAV"} <= set(texts)


def test_exported_smiles_are_svg_files_listed_in_the_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for label, t in (("2027-01-15", 0.1), ("2027-03-19", 0.3)):
        k = np.linspace(-0.3, 0.3, 15)
        vol = 0.25 - 0.1 * k + 0.3 * k**2 + rng.normal(0.0, 1e-4, k.size)
        rows += [{"expiry": label, "t": t, "k": kk, "vol": v} for kk, v in zip(k, vol, strict=True)]
    frame = pd.DataFrame(rows)
    surface = fit_underlying(frame["expiry"], frame["t"], frame["k"], frame["vol"])
    quotes = pd.DataFrame(
        {
            "underlying": "ABC",
            "expiry": frame["expiry"],
            "strike": 100.0 * np.exp(frame["k"]),
            "forward": 100.0,
            "implied_vol": frame["vol"],
        }
    )
    plots = full_smiles(quotes, {"ABC": surface})
    root = ET.fromstring(plots["ABC"])
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert len(list(root.iter(f"{SVG}circle"))) == len(quotes)
    exports = ExportsResource(root=str(tmp_path))
    index = export_smiles(exports, "2026-12-03", plots)
    assert index == smiles_index(exports, "2026-12-03")
    assert (tmp_path / "smiles" / "2026-12-03" / "ABC.svg").read_text() == plots["ABC"]
    assert '<img src="ABC.svg"' in index.read_text()
