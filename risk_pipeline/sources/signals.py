"""Synthetic trade signals with a weak, noisy predictive edge (the ``signals`` table of the synthetic source).

Per session ``d``, strategy and symbol, with ``sigma_h`` the name's trailing 63-session daily vol x sqrt(h)
(known at the close of ``d``) and ``z = ln(C_{d+h} / C_d) / sigma_h`` the realized forward move in those units::

    score = ic z + sqrt(1 - ic^2) e,      e ~ N(0, 1) seeded by (seed, 13, session index)
    expected_return = exp(ic score sigma_h) - 1      (E[z | score] = ic score for Gaussian z)
    direction = sign(score),  confidence = 2 Phi(|score|) - 1

so the signal's rank correlation with the forward return is about ``ic`` (``SIGNAL_IC`` = 0.08: weak, like a
real alpha). The index gets strategy ``index_timing``; every stock ``equity_alpha``. Sessions near the end of
the simulated path use what is left of it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

SIGNAL_IC = 0.08
SIGNAL_HORIZON = 5
VOL_WINDOW = 63
INDEX_STRATEGY = "index_timing"
STOCK_STRATEGY = "equity_alpha"


def synthetic_signals(
    close: np.ndarray,
    rows: np.ndarray,
    dates: np.ndarray,
    symbols: np.ndarray,
    is_index: np.ndarray,
    seed: int,
    session_index: np.ndarray,
    *,
    ic: float = SIGNAL_IC,
    horizon: int = SIGNAL_HORIZON,
) -> dict[str, np.ndarray]:
    """Signal columns for history rows ``rows`` of the simulated ``close`` (rows x symbols), one row per symbol.

    ``session_index`` (per entry of ``rows``) seeds each session's noise, so a row never depends on which
    sessions were asked for.
    """
    n_t, n = close.shape
    logc = np.log(close)
    out_rows = []
    for r, d in zip(rows, session_index, strict=True):
        lo = max(r - VOL_WINDOW, 0)
        ret = np.diff(logc[lo : r + 1], axis=0)
        daily = ret.std(axis=0, ddof=1) if ret.shape[0] > 2 else np.full(n, 0.02)
        h = min(horizon, n_t - 1 - r)
        sigma_h = daily * np.sqrt(max(h, 1))
        z = (logc[r + h] - logc[r]) / sigma_h if h > 0 else np.zeros(n)
        eps = np.random.default_rng([seed, 13, int(d)]).standard_normal(n)
        score = ic * z + np.sqrt(1.0 - ic * ic) * eps
        out_rows.append((score, sigma_h))
    score = np.concatenate([s for s, _ in out_rows])
    sigma = np.concatenate([v for _, v in out_rows])
    m = len(rows)
    direction = np.where(score >= 0.0, 1, -1).astype(np.int64)
    return {
        "as_of_date": np.repeat(np.asarray(dates, dtype=object), n),
        "strategy": np.tile(np.where(is_index, INDEX_STRATEGY, STOCK_STRATEGY).astype(object), m),
        "symbol": np.tile(np.asarray(symbols, dtype=object), m),
        "direction": direction,
        "expected_return": np.expm1(ic * score * sigma),
        "horizon_days": np.full(m * n, horizon, dtype=np.int64),
        "confidence": 2.0 * ndtr(np.abs(score)) - 1.0,
    }
