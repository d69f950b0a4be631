"""Volatility forecasts per symbol: EWMA, GARCH, GJR-GARCH and XGBoost with walk-forward OOS loss."""

import datetime as dt
import gc
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline.defs.common import OWNERS, PARTITIONS, markdown_table, table_definition_metadata
from risk_pipeline.quant.vol_forecast import PriceHistory, VolForecastConfig, forecast_volatility
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Between


class VolForecastSettings(dg.Config):
    """Look-back and walk-forward settings (see VolForecastConfig)."""

    lookback_sessions: int = 520
    min_train: int = 252
    refit_every: int = 63
    workers: int = 2


def forecast_rows(symbol: str, bars: pd.DataFrame, config: VolForecastConfig) -> list[dict[str, Any]]:
    """vol_forecasts rows of one symbol from its daily bars (oldest first)."""
    history = PriceHistory(
        close=bars["close"].to_numpy(float),
        open=bars["open"].to_numpy(float),
        high=bars["high"].to_numpy(float),
        low=bars["low"].to_numpy(float),
    )
    result = forecast_volatility(history, config, scored_only=True)  # no booster whose forecasts go unread
    return [
        {
            "symbol": symbol,
            "model": f.model,
            "horizon_days": f.horizon_days,
            "annualized_vol": f.annualized_vol,
            "oos_loss": f.oos_qlike,
            "oos_mse": f.oos_mse,
            "n_oos": f.n_oos,
            "selected": f.selected,
            "selection_reason": f.selection_reason,
        }
        for f in result.forecasts
    ]


def _forecast_one(args: tuple[str, pd.DataFrame, VolForecastConfig]) -> list[dict[str, Any]]:
    return forecast_rows(*args)


@dg.asset(
    group_name="volatility",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["market_prices"],
    kinds={"pandas", "xgboost"},
    owners=OWNERS,
    description=(
        "Annualized vol forecasts per symbol for 1, 5 and 21 sessions: EWMA (0.94), GARCH(1,1)-t, "
        "GJR-GARCH(1,1)-t and XGBoost, each with walk-forward out-of-sample QLIKE (oos_loss) and MSE. "
        "XGBoost is selected only where it beats GARCH out of sample; the choice and reason are on the row."
    ),
    metadata=table_definition_metadata("vol_forecasts"),
)
def vol_forecasts(
    context: dg.AssetExecutionContext, config: VolForecastSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    cfg = VolForecastConfig(min_train=config.min_train, refit_every=config.refit_every)
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        start = session - dt.timedelta(days=int(config.lookback_sessions * 7 / 5) + 15)
        bars = wh.read("market_prices", {"as_of_date": Between(start, session)}, order_by=["symbol", "as_of_date"])
        bars = bars[["symbol", "as_of_date", "open", "high", "low", "close"]]  # what the jobs read (less to pickle)
        jobs = []
        skipped = []
        for symbol, group in bars.groupby("symbol", sort=True):
            group = group.tail(config.lookback_sessions + 1)
            if len(group) < cfg.min_train + 2 or group["as_of_date"].iloc[-1] != session:
                skipped.append(str(symbol))
                continue
            jobs.append((str(symbol), group.reset_index(drop=True), cfg))
        if not jobs:
            raise dg.Failure(
                f"vol_forecasts {key}: no symbol has {cfg.min_train + 2} sessions of history ending {key}; "
                "load history first (price_history_job or `risk-pipeline demo`)"
            )
        if config.workers > 1 and len(jobs) > 1:
            # gc.freeze: the workers' collections skip the objects inherited from this process (fewer pages
            # copied on write, no traversal of Dagster's heap); no number depends on it
            with ProcessPoolExecutor(max_workers=config.workers, initializer=gc.freeze) as pool:
                results = list(pool.map(_forecast_one, jobs, chunksize=4))
        else:
            results = [_forecast_one(j) for j in jobs]
        rows = pd.DataFrame([r for rs in results for r in rs])
        rows.insert(0, "as_of_date", session)
        frames.append(rows)
        if skipped:
            context.log.warning(f"{key}: too little history for {len(skipped)} symbols: {skipped[:10]}")
    out = pd.concat(frames, ignore_index=True)
    written = wh.write(
        "vol_forecasts",
        out,
        run_id=context.run.run_id,
        partitions=[{"as_of_date": dt.date.fromisoformat(k)} for k in context.partition_keys],
    )
    summary = (
        out.groupby(["model", "horizon_days"])
        .agg(
            mean_oos_qlike=("oos_loss", "mean"),
            mean_vol=("annualized_vol", "mean"),
            selected=("selected", "sum"),
        )
        .reset_index()
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "symbols": int(out["symbol"].nunique()),
            "oos_loss_by_model": dg.MetadataValue.md(markdown_table(summary.round(4), limit=50)),
            "xgboost_selected": int(out.loc[out["model"] == "xgboost", "selected"].sum()),
            "min_train": cfg.min_train,
            "run_id": context.run.run_id,
        }
    )
