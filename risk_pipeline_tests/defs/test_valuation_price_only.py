"""``value_positions(price_only=True)`` and ``position_prices``: the same bits as the full valuation's price and
market value (the oracle is the full path, ``quant.greeks.position_greeks``)."""

from __future__ import annotations

from dataclasses import fields

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.quant.greeks import position_greeks
from risk_pipeline.quant.svi import SviFit, SviSurface
from risk_pipeline.valuation import position_prices, surfaces_by_underlying, value_positions
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


def test_position_prices_are_the_greeks_prices_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    opt = rng.random(n) < 0.8
    american = rng.random(n) < 0.6
    call = rng.random(n) < 0.5
    spot = rng.uniform(20.0, 200.0, n)
    strike = np.where(opt, spot * rng.uniform(0.6, 1.5, n), np.nan)
    # expired (t = 0), near-expiry, deterministic and ordinary options; zero vols; negative rates
    t = np.where(opt, rng.choice([0.0, 1e-9, 0.01, 0.1, 0.5, 2.0], n) * rng.uniform(0.5, 1.5, n), np.nan)
    vol = rng.uniform(0.0, 0.8, n)
    vol[::50] = 0.0
    rate = rng.uniform(-0.01, 0.08, n)
    q = rng.uniform(0.0, 0.09, n)
    full = position_greeks(np.ones(n), np.ones(n), opt, call, american, spot, strike, t, vol, rate, q)
    price = position_prices(opt, call, american, spot, strike, t, vol, rate, q)
    assert np.isfinite(price).all()
    assert _same_bits(price, full.price)


def test_price_only_valuation_is_the_full_valuations_price(run: Run) -> None:
    wh = run[0]
    stored = wh.read("position_greeks")
    times = sorted(stored["as_of"].unique())
    as_of = pd.Timestamp(times[-1])
    session = stored.loc[stored["as_of"] == times[-1], "as_of_date"].iloc[0]
    # the first valuation's book revalued at the last one (as book_nav, strategy_pnl and judge_events do)
    book = stored[stored["as_of"] == times[0]].reset_index(drop=True)
    cols = ["book", "position_id", "instrument_type", "symbol", "expiry", "strike", "option_type",
            "exercise_style", "quantity", "multiplier", "strategy", "sector"]  # fmt: skip
    full = value_positions(wh, session, as_of, positions=book[cols], allow_expired=True)
    fast = value_positions(wh, session, as_of, positions=book[cols], allow_expired=True, price_only=True)
    assert (full["exercise_style"] == "american").any()
    assert list(fast["position_id"]) == list(full["position_id"])
    for c in ("price", "market_value", "spot"):
        assert _same_bits(fast[c].to_numpy(float), full[c].to_numpy(float)), c


def _surfaces_by_itertuples(rows: pd.DataFrame) -> dict[str, SviSurface]:
    """The former ``surfaces_by_underlying`` (groupby and itertuples): the oracle of the column-wise one."""
    out = {}
    for underlying, g in rows.groupby("underlying"):
        slices = tuple(
            SviFit(a=r.svi_a, b=r.svi_b, rho=r.svi_rho, m=r.svi_m, sigma=r.svi_sigma, time_years=r.time_to_expiry_years,
                   rmse_vol_points=r.rmse_vol_points, n_quotes=int(r.n_quotes), method=r.model, converged=True,
                   butterfly_arbitrage_free=bool(r.butterfly_arbitrage_free), min_durrleman_g=r.min_durrleman_g)
            for r in g.itertuples(index=False)
        )  # fmt: skip
        out[str(underlying)] = SviSurface(slices)
    return out


def test_surfaces_by_underlying_matches_the_row_wise_build(run: Run) -> None:
    rows = run[0].read("vol_surface")
    rows = rows[rows["as_of"] == rows["as_of"].max()]
    new, old = surfaces_by_underlying(rows), _surfaces_by_itertuples(rows)
    assert sorted(new) == sorted(old) and len(new) > 1
    k = np.linspace(-0.6, 0.6, 13)
    for u, surface in old.items():
        assert repr(new[u].slices) == repr(surface.slices)  # every field's value (NaN too) and its type
        assert [[type(getattr(f, x.name)) for x in fields(f)] for f in new[u].slices] == [
            [type(getattr(f, x.name)) for x in fields(f)] for f in surface.slices
        ]
        for t in (0.02, 0.3, 1.5):
            assert _same_bits(new[u].implied_vol(np.full(k.size, t), k), surface.implied_vol(np.full(k.size, t), k))
    assert surfaces_by_underlying(rows.iloc[:0]) == {}
