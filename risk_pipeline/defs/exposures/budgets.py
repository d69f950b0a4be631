"""Risk budgets as limit_status rows: each position strategy's component VaR against its share of the book's VaR.

The budgets are the ``risk_budgets`` of data/sizing.yaml (per book, the share of its 99 % 1-day historical VaR each
position strategy may take). A strategy's component VaR is the sum of ``var_contributions`` of its symbols, a symbol
held by several strategies split by |dollar delta| (``quant.sizing.strategy_component_var``). One row per budgeted
strategy, ``limit_name`` ``risk_budget:<strategy>``: value = component VaR (USD), threshold = share x VaR, WARN
above the book's warning fraction of it, BREACH above it. The rows are reported and audited like every limit; they
do not move the trading state (reductions cannot target a budget). A loss streak (the emergency rule of the compliance
rules file) multiplies every budget share by its factor, as it does the VaR and ES caps. The sizing layer stops adding
to a strategy in BREACH and the pre-trade check rejects orders adding to its positions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from risk_pipeline.quant import sizing as sz
from risk_pipeline.quant.limits import LimitResult, LimitsConfig
from risk_pipeline.quant.trading_state import EmergencyConfig, loss_streak, risk_budget_factor
from risk_pipeline.warehouse import Warehouse

PREFIX = "risk_budget:"


def loss_streak_factor(wh: Warehouse, book: str, as_of: pd.Timestamp, cfg: EmergencyConfig) -> tuple[int, float]:
    """The book's run of losing sessions up to ``as_of`` and the factor it multiplies the risk budgets by (the
    emergency rule ``loss_streak_sessions`` / ``loss_streak_budget_factor``; 1 below the streak)."""
    pnl = wh.query(
        "SELECT as_of_date, as_of, daily_pnl FROM risk.book_nav WHERE book = ? AND as_of <= ? "
        "ORDER BY as_of_date DESC, as_of DESC LIMIT ?",
        [book, as_of, 5 * cfg.loss_streak_sessions + 5],
    ).drop_duplicates("as_of_date")
    streak = loss_streak(pnl["daily_pnl"].to_numpy(float)[::-1])
    return streak, risk_budget_factor(streak, cfg)


def budget_results(
    wh: Warehouse,
    as_of: pd.Timestamp,
    book: str,
    rows: pd.DataFrame,
    shares: dict[str, float],
    cfg: LimitsConfig,
    factor: float = 1.0,
) -> list[LimitResult]:
    """The book's risk-budget rows at ``as_of`` against the latest VaR of the same or the previous session (as the
    VaR cap uses); none without budgets, without var_contributions or without a 99 % 1-day historical VaR then.
    ``factor`` (a loss streak's, below 1) scales every budget share."""
    if not shares or not wh.table_exists("var_contributions"):
        return []
    latest = wh.query(
        "SELECT MAX(as_of) AS t FROM risk.var_results WHERE book = ? AND as_of <= ? AND as_of >= ?",
        [book, as_of, as_of - pd.Timedelta(days=5)],
    )["t"].iloc[0]
    if pd.isna(latest):
        return []
    var_as_of = pd.Timestamp(latest)
    var = wh.read("var_results", {"as_of": var_as_of, "book": book, "method": "historical", "horizon_days": 1})
    var = var[np.isclose(var["confidence"], 0.99)]
    contrib = wh.read(
        "var_contributions", {"as_of": var_as_of, "book": book, "method": "historical", "horizon_days": 1}
    )
    contrib = contrib[np.isclose(contrib["confidence"], 0.99)]
    if var.empty or contrib.empty:
        return []
    book_var = float(var["var"].iloc[0])
    by_symbol = dict(zip(contrib["symbol"], contrib["component_var"].astype(float), strict=True))
    exposure = rows["dollar_delta"].abs().to_numpy(float)
    by_strategy = sz.strategy_component_var(list(rows["symbol"]), list(rows["strategy"]), exposure, by_symbol)
    out = []
    scaled = {k: v * factor for k, v in shares.items()}
    for b in sz.risk_budget_status(by_strategy, book_var, scaled, cfg.warning_fraction):
        held = rows[rows["strategy"] == b.strategy]
        drivers = tuple(
            sorted(dict.fromkeys(held["symbol"]), key=lambda s: -by_symbol.get(s, 0.0))[:5]  # largest component first
        )
        out.append(
            LimitResult(
                limit_name=PREFIX + b.strategy,
                value=b.component_var,
                threshold=b.budget,
                warn_threshold=cfg.warning_fraction * b.budget,
                utilization=b.utilization,
                status=b.status,
                scope="strategy",
                unit="USD",
                drivers=drivers,
                note=(
                    f"component VaR of {b.strategy} against {b.budget_share:.0%} of the 99 % 1-day historical VaR "
                    f"{book_var:,.0f} at {var_as_of.isoformat()}"
                    + (f" (budget share {shares[b.strategy]:.0%} x {factor:g}: loss streak)" if factor < 1 else "")
                ),
            )
        )
    return out
