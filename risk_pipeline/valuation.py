"""Valuation of positions off the stored volatility surface (no Dagster): the one pricer of the book.

Used by ``position_greeks`` (every book at a snapshot), ``book_nav`` (yesterday's book at today's
market) and the pre-trade service (a listed option not held yet). Every input is read from the
warehouse; a missing input raises ``RiskDataError`` (fail closed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from risk_pipeline.calendar import expiry_close_utc, previous_session
from risk_pipeline.errors import RiskDataError
from risk_pipeline.quant import american as _american
from risk_pipeline.quant.american_alo import NEWTON_STEP_TOL_GREEKS, american_points
from risk_pipeline.quant.bsm import broadcast_inputs, bsm_greeks
from risk_pipeline.quant.curves import zero_rate
from risk_pipeline.quant.greeks import expiry_bucket, rolling_beta
from risk_pipeline.quant.greeks import position_greeks as compute_position_greeks
from risk_pipeline.quant.limits import BookExposure
from risk_pipeline.quant.svi import SviFit, SviSurface
from risk_pipeline.queries import close_matrix
from risk_pipeline.warehouse import Warehouse

#: Tables ``value_positions`` reads: an asset that values positions declares all of them upstream.
VALUATION_INPUTS = (
    "positions",
    "executions",
    "vol_surface",
    "option_quotes",
    "market_prices",
    "rates_curve",
    "dividend_yields",
    "instrument_quotes",
)

#: ln(K/F) step of the smile-slope finite difference (sticky-delta Greeks).
SMILE_SLOPE_STEP = 1e-4


@dataclass(frozen=True)
class ValuationSettings:
    """Sticky mode of the smile under spot moves, beta window (sessions) and the index betas are taken against."""

    sticky: Literal["strike", "delta"] = "strike"
    beta_window: int = 252
    index_symbol: str = "SYNX"


#: An option's time to expiry within this of a fitted slice's is on a listed expiry (about 30 seconds).
LISTED_EXPIRY_TOLERANCE_YEARS = 1e-6
#: Flags appended to ``vol_model`` for an option whose expiry has no fitted slice.
UNLISTED_INTERPOLATED = "; expiry not listed: interpolated in total variance between listed expiries"
UNLISTED_EXTRAPOLATED = "; expiry not listed: extrapolated beyond the listed expiries"


def surfaces_by_underlying(rows: pd.DataFrame) -> dict[str, SviSurface]:
    """SviSurface per underlying from stored vol_surface rows.

    Each column is iterated once over all rows (``Series.__iter__``: the values ``itertuples`` gives) and the
    slices of an underlying are its rows in stored order (``groupby(...).indices``), without a groupby frame and
    a namedtuple class per underlying."""
    if rows.empty:
        return {}
    cols = ("svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma", "time_to_expiry_years", "rmse_vol_points",
            "n_quotes", "model", "butterfly_arbitrage_free", "min_durrleman_g")  # fmt: skip
    a, b, rho, m, sigma, t, rmse, nq, model, arb_free, g_min = (list(rows[c]) for c in cols)
    out = {}
    for underlying, idx in rows.groupby("underlying").indices.items():
        slices = tuple(
            SviFit(
                a=a[i],
                b=b[i],
                rho=rho[i],
                m=m[i],
                sigma=sigma[i],
                time_years=t[i],
                rmse_vol_points=rmse[i],
                n_quotes=int(nq[i]),
                method=model[i],
                converged=True,
                butterfly_arbitrage_free=bool(arb_free[i]),
                min_durrleman_g=g_min[i],
            )
            for i in idx
        )
        out[str(underlying)] = SviSurface(slices)
    return out


def betas(wh: Warehouse, session: dt.date, window: int, index_symbol: str) -> dict[str, float]:
    """Rolling beta of every symbol to the index over ``window`` sessions ending at ``session``."""
    wide = close_matrix(wh, session, window)
    if index_symbol not in wide.columns or len(wide) < 21:
        return {}
    returns = np.log(wide).diff().iloc[1:]
    beta = rolling_beta(returns.to_numpy(), returns[index_symbol].to_numpy(), window)
    return dict(zip(returns.columns, beta, strict=True))


def listed_instrument_quotes(
    wh: Warehouse, session: dt.date, as_of: pd.Timestamp, positions: pd.DataFrame
) -> pd.DataFrame:
    """``instrument_quotes`` rows (indexed by symbol) of the future and ETF positions, at the session's latest
    snapshot at or before ``as_of``; empty without such positions; RiskDataError naming the positions
    whose instrument has no quote."""
    rows = positions[positions["instrument_type"].isin(["future", "etf"])]
    if rows.empty:
        return pd.DataFrame(columns=["price", "leverage", "underlying"])
    t = wh.query(
        "SELECT MAX(as_of) AS t FROM risk.instrument_quotes WHERE as_of_date = ? AND as_of <= ?", [session, as_of]
    )["t"].iloc[0]
    quotes = wh.read("instrument_quotes", {"as_of": pd.Timestamp(t)}) if pd.notna(t) else pd.DataFrame()
    quotes = quotes.set_index("symbol") if len(quotes) else pd.DataFrame(columns=["price", "leverage", "underlying"])
    missing = rows.loc[~rows["symbol"].isin(quotes.index), "position_id"].tolist()
    if missing:
        raise RiskDataError(
            f"no instrument_quotes on {session} at or before {as_of} for future/ETF positions {missing[:10]}"
        )
    return quotes.loc[sorted(set(rows["symbol"]))]


def _instrument_key(frame: pd.DataFrame) -> pd.Series:
    """Book and instrument of each row as one text key (stock-like rows: book and symbol; options: the contract)."""
    option = frame["instrument_type"].eq("option")
    expiry = pd.to_datetime(frame["expiry"]).dt.strftime("%Y-%m-%d").fillna("")
    strike = pd.to_numeric(frame["strike"]).round(6).astype(str)
    contract = expiry + "|" + strike + "|" + frame["option_type"].fillna("").astype(str)
    return frame["book"].astype(str) + "|" + frame["symbol"].astype(str) + "|" + contract.where(option, "linear")


def session_fills(wh: Warehouse, session: dt.date, as_of: pd.Timestamp) -> pd.DataFrame:
    """``executions`` of ``session`` filled at or before ``as_of`` (none when the table does not exist)."""
    if not wh.table_exists("executions"):
        return pd.DataFrame()
    fills = wh.read("executions", {"as_of_date": session})
    return fills[fills["at"] <= as_of].reset_index(drop=True)


def apply_fills(positions: pd.DataFrame, fills: pd.DataFrame, session: dt.date) -> pd.DataFrame:
    """Start-of-day ``positions`` plus intraday ``fills``: the book as it stands after them.

    A fill changes the quantity of the position holding the same instrument (same book, symbol and, for an
    option, expiry, strike and type); fills of an instrument not held open a position ``fill:<key>`` with the
    fills' volume-weighted price as cost basis. Positions left at zero are dropped.
    """
    if fills.empty:
        return positions
    fills = fills.assign(
        key=_instrument_key(fills).to_numpy(),
        signed=np.where(fills["side"].eq("buy"), 1.0, -1.0) * fills["quantity"].to_numpy(float),
    )
    fills = fills.assign(signed_notional=fills["signed"] * fills["price"])
    net = fills.groupby("key", sort=True).agg(
        signed=("signed", "sum"), signed_notional=("signed_notional", "sum"), first=("signed", "idxmin")
    )
    out = positions.reset_index(drop=True).copy()
    held_keys = _instrument_key(out) if len(out) else pd.Series(dtype=object)
    first_row = pd.Series(out.index, index=held_keys.to_numpy()).groupby(level=0).first()
    held = net.index.isin(first_row.index)
    rows = first_row.reindex(net.index[held]).to_numpy()
    out.loc[rows, "quantity"] = out.loc[rows, "quantity"].to_numpy(float) + net.loc[held, "signed"].to_numpy(float)
    new = net[~held]
    if len(new):
        first = fills.groupby("key", sort=True).head(1).set_index("key").loc[new.index]
        sector = out.groupby("symbol")["sector"].first() if len(out) else pd.Series(dtype=object)
        with np.errstate(divide="ignore", invalid="ignore"):
            basis = np.where(new["signed"] != 0, new["signed_notional"] / new["signed"], np.nan)
        opened = pd.DataFrame(
            {
                "as_of_date": session,
                "book": first["book"].to_numpy(),
                "position_id": ("fill:" + new.index.to_series()).to_numpy(),
                "instrument_type": first["instrument_type"].to_numpy(),
                "symbol": first["symbol"].to_numpy(),
                "expiry": first["expiry"].to_numpy(),
                "strike": first["strike"].to_numpy(),
                "option_type": first["option_type"].to_numpy(),
                "exercise_style": first["exercise_style"].to_numpy(),
                "quantity": new["signed"].to_numpy(float),
                "multiplier": first["multiplier"].to_numpy(float),
                "cost_basis": basis,
                "strategy": first["strategy"].fillna("intraday").to_numpy(),
                "sector": first["symbol"].map(sector).to_numpy(),
                "source": "executions",
            }
        )
        out = pd.concat([out, opened[[c for c in out.columns if c in opened.columns]]], ignore_index=True)
    return out[out["quantity"] != 0].reset_index(drop=True)


def fill_pnl(fills: pd.DataFrame, valued: pd.DataFrame) -> pd.Series:
    """P&L per book of ``fills`` marked at the valuation ``valued`` (position_greeks rows holding the instruments).

    ``signed quantity x multiplier x (valuation price - fill price)``: what the trades made or lost by the
    valuation time. An instrument no longer held at the valuation is marked at its fill price (no P&L).
    """
    if fills.empty:
        return pd.Series(dtype=float)
    price = pd.Series(valued["price"].to_numpy(float), index=_instrument_key(valued).to_numpy())
    price = price.groupby(level=0).first()
    key = _instrument_key(fills)
    mark = key.map(price).fillna(fills["price"]).to_numpy(float)
    signed = np.where(fills["side"].eq("buy"), 1.0, -1.0) * fills["quantity"].to_numpy(float)
    pnl = signed * fills["multiplier"].to_numpy(float) * (mark - fills["price"].to_numpy(float))
    return pd.Series(pnl, index=fills["book"].to_numpy()).groupby(level=0).sum()


def value_positions(
    wh: Warehouse,
    session: dt.date,
    as_of: pd.Timestamp,
    settings: ValuationSettings | None = None,
    positions: pd.DataFrame | None = None,
    allow_expired: bool = False,
    price_only: bool = False,
) -> pd.DataFrame:
    """position_greeks rows of every book at one snapshot; fails closed on any missing input.

    ``positions`` defaults to the session's stored positions with the session's ``executions`` up to
    ``as_of`` applied (``apply_fills``; another session's book can be passed to revalue it);
    ``allow_expired`` values options past expiry at their exercise value.
    ``price_only``: the rows carry only the identity columns, ``spot``, ``price`` and ``market_value``
    (``position_prices``: the same bits as the full rows' ``price`` and ``market_value``; no Greeks, no betas,
    no smile slope), and fail closed on a non-finite price only.
    """
    settings = settings or ValuationSettings()
    if positions is None:  # the session's book: start-of-day positions plus the fills up to the snapshot
        positions = apply_fills(
            wh.read("positions", {"as_of_date": session}), session_fills(wh, session, as_of), session
        )
    positions = positions.reset_index(drop=True)
    if positions.empty:
        raise RiskDataError(f"no positions stored for {session}")
    quotes = wh.query(
        "SELECT underlying, MAX(underlying_price) AS spot FROM risk.option_quotes WHERE as_of = ? GROUP BY underlying",
        [as_of],
    )
    spots = dict(zip(quotes["underlying"], quotes["spot"], strict=True))
    # symbols with no option quote in the snapshot: the session's close, or intraday (before it exists)
    # the previous session's close
    for day in (session, previous_session(session)):
        closes = wh.read("market_prices", {"as_of_date": day}, columns=["symbol", "close"])
        for sym, close in zip(closes["symbol"], closes["close"], strict=True):
            spots.setdefault(sym, close)
        if set(positions["symbol"]) <= set(spots):
            break
    listed = listed_instrument_quotes(wh, session, as_of, positions)
    for sym, price in zip(listed.index, listed["price"], strict=True):
        spots[sym] = float(price)  # futures and ETFs at their own quote (the mid), not the index level
    missing_spot = sorted(set(positions["symbol"]) - set(spots))
    if missing_spot:
        raise RiskDataError(f"no price at {as_of} and no close on {session} or the session before for {missing_spot}")
    curve = wh.read("rates_curve", {"as_of_date": session})
    dividends = wh.read("dividend_yields", {"as_of_date": session})
    q_map = dict(zip(dividends["symbol"], dividends["dividend_yield"], strict=True))
    surfaces = surfaces_by_underlying(wh.read("vol_surface", {"as_of": as_of}))

    is_option = (positions["instrument_type"] == "option").to_numpy(bool)
    spot = positions["symbol"].map(spots).to_numpy(float)
    t = np.full(len(positions), np.nan)
    if is_option.any():
        closes_utc = expiry_close_utc(positions.loc[is_option, "expiry"])
        t[is_option] = ((closes_utc - as_of).dt.total_seconds() / (365.0 * 86400.0)).to_numpy(float)
    rate = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), np.nan_to_num(t))
    q = positions["symbol"].map(q_map).fillna(0.0).to_numpy(float)
    strike = positions["strike"].to_numpy(float)
    vol = np.full(len(positions), np.nan)
    slope = np.zeros(len(positions))
    # an option whose expiry has no fitted slice is valued off the surface between or beyond the listed
    # expiries (total variance linear in t, or proportional to t outside); its vol_model says which
    expiry_note = np.full(len(positions), "", dtype=object)
    no_surface = []
    for sym in positions.loc[is_option, "symbol"].unique():
        rows = is_option & (positions["symbol"] == sym).to_numpy(bool)
        surface = surfaces.get(sym)
        if surface is None:
            no_surface += positions.loc[rows, "position_id"].tolist()
            continue
        forward = spot[rows] * np.exp((rate[rows] - q[rows]) * t[rows])
        k = np.log(strike[rows] / forward)
        tt = np.maximum(t[rows], 1e-8)
        vol[rows] = surface.implied_vol(tt, k)
        listed_t = np.array([f.time_years for f in surface.slices])
        unlisted = np.min(np.abs(tt[:, None] - listed_t[None, :]), axis=1) > LISTED_EXPIRY_TOLERANCE_YEARS
        inside = (tt >= listed_t.min()) & (tt <= listed_t.max())
        expiry_note[rows] = np.where(
            unlisted,
            np.where(inside, UNLISTED_INTERPOLATED, UNLISTED_EXTRAPOLATED),
            "",
        )
        if price_only:
            continue
        slope[rows] = (
            surface.implied_vol(tt, k + SMILE_SLOPE_STEP) - surface.implied_vol(tt, k - SMILE_SLOPE_STEP)
        ) / (2 * SMILE_SLOPE_STEP)
    if no_surface:
        raise RiskDataError(f"no vol surface at {as_of} for option positions {no_surface[:10]}")
    expired = is_option & (t <= 0)
    if allow_expired:
        t = np.where(expired, 0.0, t)
    elif expired.any():
        past = positions.loc[expired, "position_id"].tolist()
        raise RiskDataError(f"option positions past expiry at {as_of}: {past}")
    american = (positions["exercise_style"] == "american").to_numpy(bool)
    if price_only:
        units = positions["quantity"].to_numpy(float) * positions["multiplier"].to_numpy(float)
        price = position_prices(is_option, (positions["option_type"] == "C").to_numpy(bool), american, spot,
                                strike, t, vol, rate, q)  # fmt: skip
        out = pd.DataFrame(
            {
                "as_of": as_of,
                "as_of_date": session,
                **{c: positions[c] for c in ("book", "position_id", "symbol", "instrument_type", "quantity")},
                "multiplier": positions["multiplier"],
                "spot": spot,
                "price": price,
                "market_value": units * price,
                "strategy": positions["strategy"],
                "sector": positions["sector"],
            }
        )
        bad = out.loc[~np.isfinite(out["price"].to_numpy(float)), "position_id"]
        if len(bad):
            raise RiskDataError(
                f"non-finite prices at {as_of} for {bad.tolist()[:10]}: inputs on the surface are incomplete"
            )
        return out
    g = compute_position_greeks(
        quantity=positions["quantity"],
        multiplier=positions["multiplier"],
        is_option=is_option,
        is_call=(positions["option_type"] == "C").to_numpy(bool),
        is_american=american,
        spot=spot,
        strike=strike,
        time_years=t,
        vol=vol,
        rate=rate,
        dividend_yield=q,
        smile_slope=slope if settings.sticky == "delta" else None,
    )
    beta_map = betas(wh, session, settings.beta_window, settings.index_symbol)
    beta = positions["symbol"].map(beta_map).to_numpy(float)
    if len(listed):  # a future or ETF moves leverage x its index: beta = leverage x the index's beta (1 for the index)
        lev = positions["symbol"].map(listed["leverage"]).to_numpy(float)
        under = positions["symbol"].map(listed["underlying"])
        under_beta = under.map(lambda u: beta_map.get(u, 1.0) if isinstance(u, str) else np.nan).to_numpy(float)
        beta = np.where(np.isfinite(lev), lev * np.nan_to_num(under_beta, nan=1.0), beta)
    days = np.where(is_option, t * 365.0, np.nan)
    out = pd.DataFrame(
        {
            "as_of": as_of,
            "as_of_date": session,
            "book": positions["book"],
            "position_id": positions["position_id"],
            "symbol": positions["symbol"],
            "instrument_type": positions["instrument_type"],
            "option_type": positions["option_type"],
            "exercise_style": positions["exercise_style"],
            "expiry": positions["expiry"],
            "quantity": positions["quantity"],
            "multiplier": positions["multiplier"],
            "spot": spot,
            "strike": np.where(is_option, strike, np.nan),
            "time_to_expiry_years": np.where(is_option, t, np.nan),
            "implied_vol": np.where(is_option, vol, np.nan),
            "vol_model": np.where(is_option, f"raw_svi surface, sticky-{settings.sticky}" + expiry_note, None),
            "rate": np.where(is_option, rate, np.nan),
            "dividend_yield": np.where(is_option, q, np.nan),
            "pricing_model": np.where(is_option, np.where(american, "american_alo_exact", "bsm_european"), "linear"),
            "price": g.price,
            "market_value": g.market_value,
            "delta": g.delta,
            "dollar_delta": g.dollar_delta,
            "gamma": g.gamma,
            "dollar_gamma_1pct": g.dollar_gamma_1pct,
            "vega_per_vol_point": g.vega_per_vol_point,
            "theta_per_day": g.theta_per_day,
            "rho_per_pct": g.rho_per_pct,
            "vanna": g.vanna,
            "volga": g.volga,
            "charm": g.charm,
            "beta": beta,
            "beta_weighted_delta": g.dollar_delta * beta,
            "expiry_bucket": expiry_bucket(np.nan_to_num(days, nan=-1.0), is_option),
            "strategy": positions["strategy"],
            "sector": positions["sector"],
        }
    )
    bad = out.loc[~np.isfinite(out[["price", "delta", "gamma", "vega_per_vol_point"]]).all(axis=1), "position_id"]
    if len(bad):
        raise RiskDataError(
            f"non-finite Greeks at {as_of} for {bad.tolist()[:10]}: inputs on the surface are incomplete"
        )
    return out


def position_prices(
    is_option: np.ndarray,
    is_call: np.ndarray,
    is_american: np.ndarray,
    spot: np.ndarray,
    strike: np.ndarray,
    time_years: np.ndarray,
    vol: np.ndarray,
    rate: np.ndarray,
    dividend_yield: np.ndarray,
) -> np.ndarray:
    """Unit price of every position, the same bits as ``quant.greeks.position_greeks(...).price``: the spot for a
    linear position, ``bsm_greeks``' price for a European option and, for an American one, the base column of
    ``american_greeks``' exact engine (``american_points`` at ``NEWTON_STEP_TOL_GREEKS`` on the Greeks' tables;
    each point is priced on its own, so without the six bumped repricings and the gamma bumps its price is the
    same). Another American method than the exact engine: ``american_greeks``' price."""
    n = len(spot)
    price = np.asarray(spot, dtype=float).copy()
    args = [np.asarray(a, dtype=float) for a in (strike, time_years, vol, rate, dividend_yield)]
    opt = np.asarray(is_option, dtype=bool)
    american = np.asarray(is_american, dtype=bool) & opt
    call = np.asarray(is_call, dtype=bool)
    euro = opt & ~american
    if euro.any():
        price[euro] = bsm_greeks(price[euro], *(a[euro] for a in args), call[euro]).price
    if american.any():
        m = american
        if _american.DEFAULT_METHOD == "alo":
            _, flat = broadcast_inputs(price[m], *(a[m] for a in args), call[m])
            price[m] = american_points(*flat, NEWTON_STEP_TOL_GREEKS, True, False, False)[0]
        else:
            price[m] = _american.american_greeks(price[m], *(a[m] for a in args), call[m]).price
    assert price.shape == (n,)
    return price


def book_exposure(
    rows: pd.DataFrame,
    nav: pd.Series,
    correlation: pd.DataFrame | None,
    var_99_1d: float | None = None,
    es_975_1d: float | None = None,
) -> BookExposure:
    """The quant core's view of one book from its position_greeks rows and NAV row."""
    units = (rows["quantity"] * rows["multiplier"]).to_numpy(float)
    per_unit = {c: rows[c].to_numpy(float) / units for c in ("delta", "gamma", "vega_per_vol_point", "theta_per_day")}
    symbols = tuple(sorted(rows["symbol"].unique()))
    corr = None
    if correlation is not None and set(symbols) <= set(correlation.columns):
        corr = correlation.loc[list(symbols), list(symbols)].to_numpy(float)
    return BookExposure(
        position_id=rows["position_id"].to_numpy(str),
        symbol=rows["symbol"].to_numpy(str),
        sector=rows["sector"].fillna("unknown").to_numpy(str),
        quantity=rows["quantity"].to_numpy(float),
        multiplier=rows["multiplier"].to_numpy(float),
        spot=rows["spot"].to_numpy(float),
        unit_price=rows["price"].to_numpy(float),
        delta=per_unit["delta"],
        gamma=per_unit["gamma"],
        vega=per_unit["vega_per_vol_point"] * 100.0,
        theta_per_day=per_unit["theta_per_day"],
        nav=float(nav["nav"]),
        peak_nav=float(nav["peak_nav"]),
        daily_pnl=float(nav["daily_pnl"]),
        is_option=(rows["instrument_type"] == "option").to_numpy(bool),
        strategy=rows["strategy"].to_numpy(str),
        var_99_1d=var_99_1d,
        es_975_1d=es_975_1d,
        correlation=corr,
        correlation_symbols=symbols if corr is not None else None,
    )
