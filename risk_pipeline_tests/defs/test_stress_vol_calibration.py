"""The stress vol rule's calibration from stored tables: a history built with a known exponent and vol betas."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.risk.stress_vol import stress_vol_inputs
from risk_pipeline.quant.vol_shocks import VolShockRule, fit_term_exponent, fit_vol_betas
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


def _warehouse(tmp_path: Path, prices: pd.DataFrame, vols: pd.DataFrame) -> Warehouse:
    """A warehouse holding ``prices`` (``market_prices``) and ``vols`` (``atm_vol_history``)."""
    wh = Warehouse(str(tmp_path / "w" / "risk_warehouse.duckdb"))
    wh.ensure_tables()
    wh.write("market_prices", prices, run_id="t")
    wh.write("atm_vol_history", vols, run_id="t")
    return wh


def test_calibration_recovers_the_exponent_vol_betas_and_residuals(tmp_path: Path) -> None:
    prices, vols = _history()
    wh = _warehouse(tmp_path, prices, vols)
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


def _ragged_history(n: int = 90) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``_history``'s rows with gaps: sessions missing for a name (and one for every name), NULL expiries, NaN
    leg vols, an expiry that changes without a roll, and a stored name the calibration is not asked about."""
    prices, vols = _history(n)
    rng = np.random.default_rng(11)
    days = np.sort(vols["as_of_date"].unique())
    drop = (vols["as_of_date"] == days[17]) | ((vols["symbol"] == "AAA") & vols["as_of_date"].isin(days[[30, 31, 60]]))
    vols = vols[~drop].copy()
    for leg in ("near", "far"):
        blank = rng.random(len(vols)) < 0.05
        vols.loc[blank, f"{leg}_expiry"] = None
        vols.loc[rng.random(len(vols)) < 0.05, f"{leg}_atm_vol"] = np.nan
    vols.loc[(vols["symbol"] == "BBB") & (vols["as_of_date"] == days[45]), "near_expiry"] = days[45]
    extra = vols[vols["symbol"] == "AAA"].assign(symbol="CCC")
    extra_prices = prices[prices["symbol"] == "AAA"].assign(symbol="CCC")
    return pd.concat([prices, extra_prices], ignore_index=True), pd.concat([vols, extra], ignore_index=True)


def _expiry_pairs(
    vols: pd.DataFrame, names: list[str], rule: VolShockRule, first: dt.date, min_obs: int
) -> tuple[np.ndarray, ...]:
    """The calibration's (x, y, tau) pairs by a plain loop over the rows from ``first`` (the first return's
    session): per leg, name and stored session (in that order), the same expiry's log-vol move from the name's row on
    the session before (the sessions any asked name has), with ``x`` the index's 30-day log-vol move that day times
    the name's clipped vol beta (``fit_vol_betas`` of the names' 30-day log-vol changes)."""
    rows = vols[vols["symbol"].isin(names) & (vols["as_of_date"] >= first)]
    sessions = sorted(set(rows["as_of_date"]))
    at = {d: i for i, d in enumerate(sessions)}
    atm = {(r.symbol, r.as_of_date): r.atm_vol for r in rows.itertuples()}
    log_vol = {k: np.log(v) for k, v in atm.items()}
    steps = list(itertools.pairwise(sessions))
    index_move = {d: log_vol[("SYNX", d)] - log_vol[("SYNX", b)] for b, d in steps}
    changes = np.array([[log_vol.get((s, d), np.nan) - log_vol.get((s, b), np.nan) for s in names] for b, d in steps])
    beta = fit_vol_betas(changes, changes[:, names.index("SYNX")], min_obs=min_obs)[0]
    clipped = {s: rule.default_vol_beta if np.isnan(b) else min(max(b, rule.vol_beta_floor), rule.vol_beta_cap)
               for s, b in zip(names, beta, strict=True)}  # fmt: skip
    pairs: list[tuple[float, float, float]] = []
    for leg in ("near", "far"):
        for s in sorted(set(rows["symbol"])):
            mine = rows[rows["symbol"] == s].sort_values("as_of_date").to_dict("records")
            for b, r in itertools.pairwise(mine):
                expiry, before = r[f"{leg}_expiry"], b[f"{leg}_expiry"]
                tau = r[f"{leg}_time_years"] * 365.0
                if at[r["as_of_date"]] != at[b["as_of_date"]] + 1 or expiry is None or expiry != before:
                    continue
                y = np.log(r[f"{leg}_atm_vol"] / b[f"{leg}_atm_vol"])
                x = index_move[r["as_of_date"]] * clipped[s]
                if tau >= rule.min_tenor_days and np.isfinite(y) and np.isfinite(x):
                    pairs.append((x, y, tau))
    return tuple(np.array(c) for c in zip(*pairs, strict=True))


def test_calibration_pairs_each_expiry_move_with_the_session_before_on_a_ragged_history(tmp_path: Path) -> None:
    """Only a name's moves between consecutive stored sessions on the same non-NULL expiry count: the exponent is
    ``fit_term_exponent`` of exactly the pairs a plain loop finds, in its order, bit for bit."""
    prices, vols = _ragged_history()
    wh = _warehouse(tmp_path, prices, vols)
    session = prices["as_of_date"].max()
    rule = VolShockRule(term_exponent_floor=0.0, term_exponent_cap=2.0)
    out = stress_vol_inputs(wh, session, ["BBB", "AAA"], "SYNX", rule, lookback=500, min_obs=50)
    first = sorted(set(prices["as_of_date"]))[1]
    x, y, tau = _expiry_pairs(vols, ["AAA", "BBB", "SYNX"], rule, first, 50)
    fit = fit_term_exponent(x, y, rule.reference_tenor_days, tau)
    assert out.n_term_obs == fit.n_obs == np.count_nonzero(tau != rule.reference_tenor_days) > 300
    assert out.rule.term_exponent == fit.alpha
    assert f"{fit.n_obs} near/far expiry moves of 3 underlyings" in out.rule.source
