"""Position and portfolio Greeks valued off the volatility surface."""

import base64
import datetime as dt
import io
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    close_matrix,
    latest_as_of,
    markdown_table,
    table_definition_metadata,
)
from risk_pipeline.defs.volatility.surfaces import SnapshotSelection, expiry_close_utc, snapshot_time
from risk_pipeline.quant.curves import zero_rate
from risk_pipeline.quant.greeks import expiry_bucket, rolling_beta
from risk_pipeline.quant.greeks import position_greeks as compute_position_greeks
from risk_pipeline.quant.svi import SviFit, SviSurface
from risk_pipeline.resources import ExportsResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse

GROUP = "exposures"
SMILE_SLOPE_STEP = 1e-4
GREEK_COLUMNS = [
    "delta",
    "dollar_delta",
    "gamma",
    "dollar_gamma_1pct",
    "vega_per_vol_point",
    "theta_per_day",
    "rho_per_pct",
    "beta_weighted_delta",
    "market_value",
]


class PositionGreeksConfig(dg.Config):
    """Valuation settings: snapshot (default the session's latest), sticky mode, beta window, index."""

    snapshot_time: str | None = None
    sticky: Literal["strike", "delta"] = "strike"
    beta_window: int = 252
    index_symbol: str = "SYNX"


def surfaces_by_underlying(rows: pd.DataFrame) -> dict[str, SviSurface]:
    """SviSurface per underlying from stored vol_surface rows."""
    out = {}
    for underlying, g in rows.groupby("underlying"):
        slices = tuple(
            SviFit(
                a=r.svi_a,
                b=r.svi_b,
                rho=r.svi_rho,
                m=r.svi_m,
                sigma=r.svi_sigma,
                time_years=r.time_to_expiry_years,
                rmse_vol_points=r.rmse_vol_points,
                n_quotes=int(r.n_quotes),
                method=r.model,
                converged=True,
                butterfly_arbitrage_free=bool(r.butterfly_arbitrage_free),
                min_durrleman_g=r.min_durrleman_g,
            )
            for r in g.itertuples(index=False)
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


def value_positions(
    wh: Warehouse,
    session: dt.date,
    as_of: pd.Timestamp,
    config: PositionGreeksConfig,
    positions: pd.DataFrame | None = None,
    allow_expired: bool = False,
) -> pd.DataFrame:
    """position_greeks rows of every book at one snapshot; fails closed on any missing input.

    ``positions`` defaults to the session's stored positions (another session's book can be passed
    to revalue it); ``allow_expired`` values options past expiry at their exercise value.
    """
    if positions is None:
        positions = wh.read("positions", {"as_of_date": session})
    positions = positions.reset_index(drop=True)
    if positions.empty:
        raise dg.Failure(f"no positions stored for {session}")
    quotes = wh.query(
        "SELECT underlying, MAX(underlying_price) AS spot FROM risk.option_quotes WHERE as_of = ? GROUP BY underlying",
        [as_of],
    )
    spots = dict(zip(quotes["underlying"], quotes["spot"], strict=True))
    closes = wh.read("market_prices", {"as_of_date": session}, columns=["symbol", "close"])
    for sym, close in zip(closes["symbol"], closes["close"], strict=True):
        spots.setdefault(sym, close)
    missing_spot = sorted(set(positions["symbol"]) - set(spots))
    if missing_spot:
        raise dg.Failure(f"no price at {as_of} or close on {session} for {missing_spot}")
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
        slope[rows] = (
            surface.implied_vol(tt, k + SMILE_SLOPE_STEP) - surface.implied_vol(tt, k - SMILE_SLOPE_STEP)
        ) / (2 * SMILE_SLOPE_STEP)
    if no_surface:
        raise dg.Failure(f"no vol surface at {as_of} for option positions {no_surface[:10]}")
    expired = is_option & (t <= 0)
    if allow_expired:
        t = np.where(expired, 0.0, t)
    elif expired.any():
        raise dg.Failure(f"option positions past expiry at {as_of}: {positions.loc[expired, 'position_id'].tolist()}")
    american = (positions["exercise_style"] == "american").to_numpy(bool)
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
        smile_slope=slope if config.sticky == "delta" else None,
    )
    beta_map = betas(wh, session, config.beta_window, config.index_symbol)
    beta = positions["symbol"].map(beta_map).to_numpy(float)
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
            "vol_model": np.where(is_option, f"raw_svi surface, sticky-{config.sticky}", None),
            "rate": np.where(is_option, rate, np.nan),
            "dividend_yield": np.where(is_option, q, np.nan),
            "pricing_model": np.where(
                is_option, np.where(american, "bjerksund_stensland_2002", "bsm_european"), "linear"
            ),
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
        raise dg.Failure(f"non-finite Greeks at {as_of} for {bad.tolist()[:10]}: inputs on the surface are incomplete")
    return out


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["positions", "vol_surface", "option_quotes", "market_prices", "rates_curve", "dividend_yields"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "Every position of every book valued off the SVI surface at the option snapshot (sticky-strike "
        "by default): price and Greeks with spot, strike, time, vol, rate and dividend yield on the row; "
        "American single-stock options by Bjerksund-Stensland 2002, index options European."
    ),
    metadata=table_definition_metadata("position_greeks"),
)
def position_greeks(
    context: dg.AssetExecutionContext, config: PositionGreeksConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = snapshot_time(wh, session, SnapshotSelection(snapshot_time=config.snapshot_time))
        frames.append(value_positions(wh, session, as_of, config))
    out = pd.concat(frames, ignore_index=True)
    snapshots = [{"as_of": t} for t in sorted(out["as_of"].unique())]
    written = wh.write("position_greeks", out, run_id=context.run.run_id, partitions=snapshots)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "books": ", ".join(sorted(out["book"].unique())),
            "as_of": ", ".join(pd.Timestamp(t["as_of"]).isoformat() for t in snapshots),
            "sticky": config.sticky,
            "run_id": context.run.run_id,
        }
    )


def aggregate(position_rows: pd.DataFrame) -> pd.DataFrame:
    """portfolio_greeks rows: total per book plus splits by underlying, expiry bucket and strategy."""
    frames = []
    keys = ["as_of", "as_of_date", "book"]
    for scope, column in (
        ("total", None),
        ("underlying", "symbol"),
        ("expiry_bucket", "expiry_bucket"),
        ("strategy", "strategy"),
    ):
        by = keys + ([column] if column else [])
        g = position_rows.groupby(by, sort=True, dropna=False)
        agg = g[GREEK_COLUMNS].sum(min_count=1).fillna(0.0)
        agg["positions_count"] = g.size()
        agg = agg.reset_index()
        agg.insert(3, "scope", scope)
        agg.insert(4, "scope_value", agg.pop(column).astype(str) if column else "all")
        frames.append(agg)
    return pd.concat(frames, ignore_index=True)


def book_document(total_row: pd.Series) -> dict[str, object]:
    """The JSON document downstream tools read per book."""
    return {
        "delta": float(total_row["delta"]),
        "gamma": float(total_row["gamma"]),
        "theta": float(total_row["theta_per_day"]),
        "vega": float(total_row["vega_per_vol_point"]),
        "timestamp": pd.Timestamp(total_row["as_of"]).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "positions_count": int(total_row["positions_count"]),
    }


def _bar_chart(rows: pd.DataFrame, book: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rows[(rows["scope"] == "underlying") & (rows["book"] == book)].sort_values("dollar_delta")
    fig, axes = plt.subplots(1, 2, figsize=(8, max(2.5, 0.16 * len(data))), dpi=72, sharey=True)
    axes[0].barh(data["scope_value"], data["dollar_delta"] / 1e6)
    axes[0].set_xlabel("dollar delta ($M)")
    axes[1].barh(data["scope_value"], data["vega_per_vol_point"] / 1e3)
    axes[1].set_xlabel("vega per vol point ($k)")
    for ax in axes:
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{book}: by underlying", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks"],
    kinds={"pandas", "json"},
    owners=OWNERS,
    description=(
        "Book totals of the position Greeks and splits by underlying, expiry bucket (0-7d, 8-30d, 31-90d, "
        "91d+) and strategy, each summing to the total; also one JSON document per book "
        "(exports/portfolio_greeks/<book>.json)."
    ),
    metadata=table_definition_metadata("portfolio_greeks"),
    check_specs=[
        dg.AssetCheckSpec(
            "splits_sum_to_total",
            asset="portfolio_greeks",
            blocking=True,
            description="Every split of every book sums back to the book's total.",
        )
    ],
)
def portfolio_greeks(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        latest = latest_as_of(wh, "position_greeks", session)
        if latest is None:
            raise dg.Failure(f"no position_greeks for {key}")
        frames.append(aggregate(wh.read("position_greeks", {"as_of": latest})))
    rows = pd.concat(frames, ignore_index=True)
    written = wh.write(
        "portfolio_greeks",
        rows,
        run_id=context.run.run_id,
        partitions=[{"as_of": t} for t in rows["as_of"].unique()],
    )
    last = rows[rows["as_of"] == rows["as_of"].max()]
    totals = last[last["scope"] == "total"]
    files = []
    for _, total in totals.iterrows():
        files.append(str(exports.write_json(f"portfolio_greeks/{total['book']}.json", book_document(total))))
    worst = 0.0
    for (_, book, _scope), g in rows[rows["scope"] != "total"].groupby(["as_of", "book", "scope"]):
        t = rows[(rows["scope"] == "total") & (rows["book"] == book) & (rows["as_of"] == g["as_of"].iloc[0])]
        diff = (g[GREEK_COLUMNS].sum() - t[GREEK_COLUMNS].iloc[0]).abs() / (t[GREEK_COLUMNS].iloc[0].abs() + 1.0)
        worst = max(worst, float(diff.max()))
    charts = "\n\n".join(
        f"![{b}](data:image/png;base64,{_bar_chart(last, b)})" for b in sorted(totals["book"].unique())
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "totals": dg.MetadataValue.md(
                markdown_table(totals[["book", *GREEK_COLUMNS, "positions_count"]].round(2), 20)
            ),
            "by_underlying": dg.MetadataValue.md(charts),
            "json_documents": ", ".join(files),
            "run_id": context.run.run_id,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="splits_sum_to_total",
                passed=worst < 1e-9,
                metadata={"worst_relative_difference": worst},
            )
        ],
    )
