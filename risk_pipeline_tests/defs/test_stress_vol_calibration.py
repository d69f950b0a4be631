"""The stress vol rule's calibration from stored tables: a history built with a known exponent and vol betas."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.risk.stress_vol import stress_vol_inputs
from risk_pipeline.quant.vol_shocks import VolShockRule
from risk_pipeline.warehouse import Warehouse

ALPHA = 0.4
VOL_BETA = {"SYNX": 1.0, "AAA": 0.5, "BBB": 0.8}
SPOT_BETA = {"SYNX": 1.0, "AAA": 1.2, "BBB": 0.7}


def _history(n: int = 320) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``market_prices`` and ``atm_vol_history`` rows: listed expiries 40 days out rolled every 20 sessions,
    the near and far legs moving ``(30 / tau)^ALPHA`` times the name's systematic 30-day move."""
    rng = np.random.default_rng(2)
    days = pd.bdate_range("2025-01-02", periods=n).date
    x = rng.normal(0.0, 0.05, n)  # index 30-day log-vol moves
    r_index = rng.normal(0.0, 0.01, n)
    prices, vols = [], []
    for s in VOL_BETA:
        resid = np.zeros(n) if s == "SYNX" else rng.normal(0.0, 0.015, n)
        close = 100.0 * np.exp(np.cumsum(SPOT_BETA[s] * r_index + resid))
        prices.append(
            pd.DataFrame(
                {"as_of_date": days, "symbol": s, "open": close, "high": close, "low": close, "close": close}
                | {"volume": 1e6, "event_flag": None, "source": "test"}
            )
        )
        move = VOL_BETA[s] * x
        atm = 0.2 * np.exp(np.cumsum(move))
        block = np.arange(n) // 20
        age = np.arange(n) % 20
        legs = {}
        for leg, extra in (("near", 0.0), ("far", 30.0)):
            tau = 40.0 - age + extra  # days to the leg's expiry; a new expiry every 20 sessions
            step = np.where(age == 0, 0.0, (30.0 / tau) ** ALPHA * move)
            level = 0.22 * np.exp(pd.Series(step).groupby(block).cumsum().to_numpy())
            expiry = [days[b * 20] + dt.timedelta(days=40 + int(extra)) for b in block]
            legs |= {f"{leg}_expiry": expiry, f"{leg}_time_years": tau / 365.0, f"{leg}_atm_vol": level}
        vols.append(
            pd.DataFrame(
                {"as_of_date": days, "symbol": s, "as_of": pd.to_datetime(days).tz_localize("UTC")}
                | {"tenor_days": 30, "atm_vol": atm, "spot": 100.0, **legs, "extrapolated": False}
                | {"quotes_used": 20, "method": "test", "source": "test"}
            )
        )
    return pd.concat(prices, ignore_index=True), pd.concat(vols, ignore_index=True)


def test_calibration_recovers_the_exponent_vol_betas_and_residuals(tmp_path: Path) -> None:
    wh = Warehouse(str(tmp_path / "w" / "risk_warehouse.duckdb"))
    wh.ensure_tables()
    prices, vols = _history()
    wh.write("market_prices", prices, run_id="t")
    wh.write("atm_vol_history", vols, run_id="t")
    session = prices["as_of_date"].max()
    out = stress_vol_inputs(wh, session, ["AAA", "BBB"], "SYNX", VolShockRule(), lookback=500, min_obs=250)
    assert out.rule.term_exponent == pytest.approx(ALPHA, abs=1e-6)
    assert "atm_vol_history" in out.rule.source and out.n_term_obs > 250
    beta, vol_sd = out.per_symbol(["SYNX", "AAA", "BBB"])
    np.testing.assert_allclose(beta, [1.0, 0.5, 0.8], rtol=1e-9)
    np.testing.assert_allclose(vol_sd, 0.0, atol=1e-9)  # noise-free 30-day moves; the index is 0 by definition
    betas = np.array([SPOT_BETA[s] for s in ("SYNX", "AAA", "BBB")])
    spot_sd = out.spot_resid_sd(["SYNX", "AAA", "BBB"], betas, 60)
    r = np.log(prices.pivot(index="as_of_date", columns="symbol", values="close")).diff().iloc[1:]
    assert spot_sd[0] == 0.0
    for j, s in enumerate(("AAA", "BBB"), start=1):
        assert spot_sd[j] == pytest.approx(np.std(r[s] - SPOT_BETA[s] * r["SYNX"], ddof=1), rel=1e-9)
    # too little history: the library's exponent, and the reason
    short = stress_vol_inputs(wh, session, ["AAA"], "SYNX", VolShockRule(), lookback=500, min_obs=10_000)
    assert short.rule.term_exponent == VolShockRule().term_exponent and "library default" in short.rule.source
    missing = stress_vol_inputs(wh, session, ["AAA"], "NOPE", VolShockRule(), lookback=500, min_obs=250)
    assert "NOPE has no atm_vol_history" in missing.rule.source
