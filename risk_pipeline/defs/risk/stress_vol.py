"""Inputs of the stress vol rule from the stored history: expiry exponent, vol betas, residual sds (no Dagster)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

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
    hist = hist.sort_values(["symbol", "as_of_date"]).reset_index(drop=True)
    lv = np.log(hist.pivot(index="as_of_date", columns="symbol", values="atm_vol").sort_index())
    dlv = lv.diff().iloc[1:].reindex(columns=names)
    if index_symbol not in lv.columns or len(dlv) < 3:
        empty = pd.Series(np.nan, index=names)
        why = f"library default ({index_symbol} has no atm_vol_history before {session})"
        return StressVolInputs(replace(rule, source=why), empty, empty, returns, index_symbol, 0)
    x_index = dlv[index_symbol].to_numpy(float)
    beta, sd = fit_vol_betas(dlv.to_numpy(float), x_index, min_obs=min(min_obs, 60))
    vol_beta = pd.Series(beta, index=names)
    vol_sd = pd.Series(sd, index=names)
    # near/far legs: the move of one listed expiry between consecutive stored sessions
    prev = hist.groupby("symbol").shift(1)
    index_move = pd.Series(x_index, index=dlv.index)
    sys_move = hist["as_of_date"].map(index_move).to_numpy(float) * hist["symbol"].map(
        vol_beta.clip(rule.vol_beta_floor, rule.vol_beta_cap).fillna(rule.default_vol_beta)
    ).to_numpy(float)
    previous_session = pd.Series(lv.index[:-1], index=lv.index[1:])
    consecutive = (hist["as_of_date"].map(previous_session) == prev["as_of_date"]).to_numpy(bool)
    xs, ys, taus = [], [], []
    for leg in ("near", "far"):
        same = consecutive & (hist[f"{leg}_expiry"] == prev[f"{leg}_expiry"]).to_numpy(bool)
        tau = hist[f"{leg}_time_years"].to_numpy(float) * 365.0
        y = np.log(hist[f"{leg}_atm_vol"].to_numpy(float) / prev[f"{leg}_atm_vol"].to_numpy(float))
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
        f"atm_vol_history {dlv.index[0]}..{dlv.index[-1]}: {fit.n_obs} near/far expiry moves of "
        f"{hist['symbol'].nunique()} underlyings on the systematic 30 d move, fit {fit.alpha:.3f}"
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
