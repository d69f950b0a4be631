"""Inputs of the stress vol rule from the stored history: expiry exponent, vol betas, residual sds (no Dagster)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from risk_pipeline.quant.portfolio import POSITION_FIELDS, Portfolio
from risk_pipeline.quant.vol_shocks import VolShockRule, fit_term_exponent, fit_vol_betas, residual_sd
from risk_pipeline.queries import close_matrix
from risk_pipeline.warehouse import Between, Warehouse

#: defaults of the vol rule's calibration (stress_results' StressSettings, and var_results' expiry-scaled term
#: structure): the reference index, the sessions calibrated on and the fewest expiry moves for a fitted alpha
DEFAULT_INDEX_SYMBOL = "SYNX"
CALIBRATION_SESSIONS = 500
CALIBRATION_MIN_OBS = 250


@dataclass(frozen=True)
class StressVolInputs:
    """The calibrated rule and, per symbol, vol beta, residual log-vol sd and the log-return history."""

    rule: VolShockRule
    vol_beta: pd.Series
    vol_resid_sd: pd.Series
    returns: pd.DataFrame
    index_symbol: str
    n_term_obs: int

    def spot_resid_sd(self, symbols: Sequence[str], betas: np.ndarray, min_obs: int) -> np.ndarray:
        """Daily sd of ``r_s - beta_s r_index`` per symbol (0 for the index, NaN without history)."""
        if self.index_symbol not in self.returns.columns:
            return np.full(len(symbols), np.nan)
        r = self.returns.reindex(columns=list(symbols))
        sd = residual_sd(r.to_numpy(float), self.returns[self.index_symbol].to_numpy(float), betas, min_obs)
        return np.where(np.asarray(symbols) == self.index_symbol, 0.0, sd)

    def per_symbol(self, symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vol betas (NaN = no history: the rule's default) and residual log-vol sds (0 for the index)."""
        beta = self.vol_beta.reindex(list(symbols)).to_numpy(float)
        sd = self.vol_resid_sd.reindex(list(symbols)).to_numpy(float)
        return beta, np.where(np.asarray(symbols) == self.index_symbol, 0.0, sd)


@dataclass(frozen=True, eq=False)
class _VolRows:
    """``atm_vol_history`` rows in (symbol, session) order: ``order`` the read's row of each, ``symbol`` and ``day``
    its indices into the sorted distinct ``symbols`` and ``days``, ``after`` whether the row before is its symbol's."""

    order: np.ndarray
    symbol: np.ndarray
    day: np.ndarray
    symbols: np.ndarray
    days: np.ndarray
    after: np.ndarray

    @classmethod
    def of(cls, hist: pd.DataFrame) -> _VolRows:
        symbol, symbols = pd.factorize(hist["symbol"].to_numpy(object), sort=True)
        day, days = pd.factorize(hist["as_of_date"].to_numpy(object), sort=True)
        order = np.lexsort((day, symbol))
        symbol, day = symbol[order], day[order]
        after = np.zeros(order.size, dtype=bool)
        after[1:] = symbol[1:] == symbol[:-1]
        return cls(order, symbol, day, np.asarray(symbols, dtype=object), np.asarray(days, dtype=object), after)


def stress_vol_inputs(
    wh: Warehouse,
    session: dt.date,
    symbols: Sequence[str],
    index_symbol: str,
    rule: VolShockRule,
    lookback: int,
    min_obs: int,
) -> StressVolInputs:
    """Calibrate ``rule`` on the ``lookback`` sessions of ``atm_vol_history`` and ``market_prices`` up to ``session``.

    Vol beta and residual sd of each symbol: ``fit_vol_betas`` of its daily 30-day ATM log-vol changes on
    ``index_symbol``'s. Expiry exponent: ``fit_term_exponent`` with ``x`` the systematic 30-day move
    ``beta_v_s dln(atm_vol_index)`` and ``y`` the same day's log-vol move of the near and of the far expiry
    of ``atm_vol_history`` (same expiry as the previous session, at least ``rule.min_tenor_days`` away),
    ``tau`` its days to expiry; clipped to the rule's floor and cap. With fewer than ``min_obs`` moves
    the library's exponent is kept, and ``source`` says why.
    """
    names = sorted({*symbols, index_symbol})
    closes = close_matrix(wh, session, lookback, names)
    returns = np.log(closes).diff().iloc[1:].tail(lookback)
    first = returns.index[0] if len(returns) else session
    cols = ["as_of_date", "symbol", "atm_vol", "near_expiry", "near_time_years", "near_atm_vol"]
    cols += ["far_expiry", "far_time_years", "far_atm_vol"]
    hist = wh.read("atm_vol_history", {"as_of_date": Between(first, session), "symbol": names}, columns=cols)
    rows = _VolRows.of(hist)
    lv = np.full((rows.days.size, rows.symbols.size), np.nan, order="F")
    lv[rows.day, rows.symbol] = hist["atm_vol"].to_numpy(float)[rows.order]
    np.log(lv, out=lv)
    at = np.searchsorted(names, rows.symbols)  # the stored symbols are among ``names`` (the read's filter)
    # sessions x names in column-major order, as pandas hands over its frame: fit_vol_betas' sums over the sessions
    # then add in the same order
    dlv = np.full((max(rows.days.size - 1, 0), len(names)), np.nan, order="F")
    dlv[:, at] = lv[1:] - lv[:-1]
    if index_symbol not in set(rows.symbols) or len(dlv) < 3:
        empty = pd.Series(np.nan, index=names)
        why = f"library default ({index_symbol} has no atm_vol_history before {session})"
        return StressVolInputs(replace(rule, source=why), empty, empty, returns, index_symbol, 0)
    x_index = dlv[:, names.index(index_symbol)].copy()
    beta, sd = fit_vol_betas(dlv, x_index, min_obs=min(min_obs, 60))
    vol_beta = pd.Series(beta, index=names)
    vol_sd = pd.Series(sd, index=names)
    # near/far legs: the move of one listed expiry between consecutive stored sessions
    clipped = vol_beta.clip(rule.vol_beta_floor, rule.vol_beta_cap).fillna(rule.default_vol_beta).to_numpy(float)
    day_move = np.concatenate([[np.nan], x_index])  # the index's move into each stored session (none on the first)
    sys_move = day_move[rows.day] * clipped[at][rows.symbol]
    consecutive = rows.after.copy()
    consecutive[1:] &= rows.day[:-1] == rows.day[1:] - 1
    xs, ys, taus = [], [], []
    for leg in ("near", "far"):
        expiry = pd.factorize(hist[f"{leg}_expiry"].to_numpy(object)[rows.order])[0]  # None: -1, equal to nothing
        same = consecutive & (expiry != -1)
        same[1:] &= expiry[1:] == expiry[:-1]
        tau = hist[f"{leg}_time_years"].to_numpy(float)[rows.order] * 365.0
        vol = hist[f"{leg}_atm_vol"].to_numpy(float)[rows.order]
        before = np.concatenate([[np.nan], vol[:-1]])
        before[~rows.after] = np.nan
        y = np.log(vol / before)
        keep = same & (tau >= rule.min_tenor_days) & np.isfinite(y) & np.isfinite(sys_move)
        xs.append(sys_move[keep])
        ys.append(y[keep])
        taus.append(tau[keep])
    x, y, tau = (np.concatenate(a) for a in (xs, ys, taus))
    n = int(np.count_nonzero(tau != rule.reference_tenor_days))
    if n < min_obs:
        why = f"library default (atm_vol_history {first}..{session}: {n} expiry moves, fewer than {min_obs})"
        return StressVolInputs(replace(rule, source=why), vol_beta, vol_sd, returns, index_symbol, n)
    fit = fit_term_exponent(x, y, rule.reference_tenor_days, tau)
    alpha = float(np.clip(fit.alpha, rule.term_exponent_floor, rule.term_exponent_cap))
    source = (
        f"atm_vol_history {rows.days[1]}..{rows.days[-1]}: {fit.n_obs} near/far expiry moves of "
        f"{rows.symbols.size} underlyings on the systematic 30 d move, fit {fit.alpha:.3f}"
        + (f" clipped to [{rule.term_exponent_floor:g}, {rule.term_exponent_cap:g}]" if alpha != fit.alpha else "")
    )
    return StressVolInputs(
        replace(rule, term_exponent=alpha, source=source), vol_beta, vol_sd, returns, index_symbol, fit.n_obs
    )


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def vol_parameters_json(
    rule: VolShockRule,
    inputs: StressVolInputs | None,
    symbols: Sequence[str],
    betas: np.ndarray,
    min_obs: int,
) -> str:
    """``stress_results.vol_parameters``: the rule as applied (every field) and, per symbol, the vol beta, the daily
    residual 30-day log-vol sd and log-return sd fed to ``run_stress`` (null: no history)."""
    doc: dict[str, object] = {"rule": asdict(rule)}
    if inputs is not None:
        beta, vol_sd = inputs.per_symbol(symbols)
        doc |= {
            "symbols": list(symbols),
            "vol_beta": _listed(beta),
            "idio_vol_sd": _listed(vol_sd),
            "idio_spot_sd": _listed(inputs.spot_resid_sd(symbols, betas, min_obs)),
        }
    return json.dumps(doc)


@dataclass(frozen=True)
class StoredVolParameters:
    """``stress_results.vol_parameters`` read back: the rule and per-symbol arrays for ``run_stress`` (NaN: none)."""

    rule: VolShockRule
    vol_beta: pd.Series
    idio_vol_sd: pd.Series
    idio_spot_sd: pd.Series

    @classmethod
    def parse(cls, text: str) -> StoredVolParameters:
        doc = json.loads(text)
        names = doc.get("symbols", [])

        def series(key: str) -> pd.Series:
            return pd.Series([np.nan if v is None else v for v in doc.get(key, [])], index=names, dtype=float)

        return cls(VolShockRule(**doc["rule"]), series("vol_beta"), series("idio_vol_sd"), series("idio_spot_sd"))

    def missing(self, symbols: Sequence[str]) -> list[str]:
        """Symbols without stored parameters (under ``expiry_name_skew``)."""
        if self.rule.kind == "flat_multiplier":
            return []
        return [s for s in symbols if s not in self.vol_beta.index]

    def per_symbol(self, symbols: Sequence[str]) -> dict[str, np.ndarray]:
        """``run_stress`` / ``stress_scenarios`` keyword arrays for ``symbols``."""
        return {
            "vol_betas": self.vol_beta.reindex(list(symbols)).to_numpy(float),
            "idio_vol_sd": self.idio_vol_sd.reindex(list(symbols)).to_numpy(float),
            "idio_spot_sd": self.idio_spot_sd.reindex(list(symbols)).to_numpy(float),
        }


def searched_digest(p: Portfolio, betas: np.ndarray) -> str:
    """SHA-256 of what a stress search of ``p`` depends on besides the scenarios and vol inputs: the symbols, spots,
    betas and every position field, in order."""
    h = hashlib.sha256("\x1f".join(p.symbols).encode())
    h.update("\x1f".join(p.position_id or ()).encode())
    for a in (p.spot, np.asarray(betas, dtype=np.float64), p.symbol_index, p.quantity):
        h.update(np.ascontiguousarray(a).tobytes())
    for name in POSITION_FIELDS:
        h.update(np.ascontiguousarray(getattr(p, name)).tobytes())
    return h.hexdigest()


def searched_shocks_json(
    p: Portfolio, betas: np.ndarray, spot_log_shock: np.ndarray, name_log_vol_move: np.ndarray
) -> list[str]:
    """``stress_results.searched_shocks``, one per scenario row: the book's symbols, ``searched_digest`` and, per
    symbol, the log spot shock and 30-day log-vol move ``run_stress`` revalued ``p`` in (its ``shocks_out``; null: not
    finite)."""
    names, digest = list(p.symbols), searched_digest(p, betas)
    return [
        json.dumps({"symbols": names, "digest": digest, "spot_log_shock": _listed(s), "name_log_vol_move": _listed(v)})
        for s, v in zip(spot_log_shock, name_log_vol_move, strict=True)
    ]


def parse_searched_shocks(
    texts: Sequence[str | None], p: Portfolio, betas: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``searched_shocks`` of a book's rows (in scenario order) read back for ``p``: the ``(n, n_symbols)`` log spot
    shocks and log-vol moves (None: a row without them, or stored for other symbols, positions or betas)."""
    if not texts or any(not isinstance(t, str) for t in texts):
        return None
    docs = [json.loads(t) for t in texts]
    names, digest = list(p.symbols), searched_digest(p, betas)
    if any(d["symbols"] != names or d.get("digest") != digest for d in docs):
        return None
    spot = [d["spot_log_shock"] for d in docs]
    vol = [d["name_log_vol_move"] for d in docs]
    if any(v is None for row in spot + vol for v in row):
        return None
    shape = (len(docs), len(names))
    return np.array(spot, dtype=np.float64).reshape(shape), np.array(vol, dtype=np.float64).reshape(shape)
