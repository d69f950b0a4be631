"""Daily constant-maturity ATM implied vol per underlying: the implied-vol risk factor history of VaR."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import session_close_utc
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    markdown_table,
    partition_label,
    partition_sessions,
    publish,
    table_definition_metadata,
    write_quarantine,
)
from risk_pipeline.defs.volatility.surfaces import implied_vol_frame
from risk_pipeline.quality import ValidationContext, validate
from risk_pipeline.quant.atm_vol import constant_maturity_vol, expiry_atm_vols
from risk_pipeline.quant.curves import zero_rate
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Between

METHOD = "at-forward vol linear in ln(K/F) between OTM mids; total variance linear in T between bracketing expiries"
MIN_VOL, MAX_VOL = 0.01, 5.0


class AtmVolSettings(dg.Config):
    """Tenor of the constant-maturity vol, shortest expiry used and OTM strikes used per side of the forward."""

    tenor_days: int = 30
    min_expiry_days: int = 7
    strikes_per_side: int = 3


def bracketing_quotes(
    quotes: pd.DataFrame, curve: pd.DataFrame, dividends: pd.DataFrame, settings: AtmVolSettings
) -> pd.DataFrame:
    """One session's quotes used: per underlying the two expiries around the tenor (the first two after it
    when none is before), and per expiry the ``strikes_per_side`` out-of-the-money puts and calls nearest
    the forward (curve rate, dividend yield)."""
    if quotes.empty:
        return quotes
    days = (pd.to_datetime(quotes["expiry"]) - pd.to_datetime(quotes["as_of_date"])).dt.days.to_numpy()
    listed = quotes.assign(_days=days)[days >= settings.min_expiry_days]
    key = ["underlying"]
    near = listed[listed["_days"] <= settings.tenor_days].groupby(key)["_days"].max().rename("_near")
    after = listed.loc[listed["_days"] > settings.tenor_days, ["underlying", "_days"]].drop_duplicates()
    after = after.sort_values(["underlying", "_days"])
    rank = after.groupby("underlying").cumcount().to_numpy()
    far = after[rank == 0].set_index("underlying")["_days"].rename("_far")
    second = after[rank == 1].set_index("underlying")["_days"].rename("_second")
    chosen = listed.join(near, on=key).join(far, on=key).join(second, on=key)
    # the second expiry after the tenor only where none is before it (extrapolation, quant.atm_vol)
    use = (chosen["_days"] == chosen["_near"]) | (chosen["_days"] == chosen["_far"])
    use |= chosen["_near"].isna() & (chosen["_days"] == chosen["_second"])
    chosen = chosen[use]
    t = chosen["_days"].to_numpy(float) / 365.0
    rate = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), t)
    q = chosen["underlying"].map(dict(zip(dividends["symbol"], dividends["dividend_yield"], strict=True)))
    forward = chosen["underlying_price"].to_numpy(float) * np.exp((rate - q.fillna(0.0).to_numpy(float)) * t)
    k = np.log(chosen["strike"].to_numpy(float) / forward)
    is_call = (chosen["option_type"] == "C").to_numpy()
    otm = np.where(is_call, k > 0.0, k <= 0.0)
    chosen = chosen.assign(_abs_k=np.abs(k))[otm]
    rank = chosen.groupby(["underlying", "expiry", "option_type"])["_abs_k"].rank(method="first")
    out = chosen[rank.to_numpy() <= settings.strikes_per_side]
    out = out.drop(columns=["_days", "_near", "_far", "_second", "_abs_k"]).reset_index(drop=True)
    out.attrs = quotes.attrs
    return out


def atm_vol_rows(iv: pd.DataFrame, tenor_days: int, source: str) -> pd.DataFrame:
    """atm_vol_history rows from implied_vols-style rows of one or more sessions."""
    columns = table("atm_vol_history").data_column_names
    if iv.empty:
        return pd.DataFrame(columns=columns)
    slices = iv.groupby(["as_of_date", "underlying", "expiry"], sort=True).ngroup().to_numpy()
    n_slices = int(slices.max()) + 1
    k = np.log(iv["strike"].to_numpy(float) / iv["forward"].to_numpy(float))
    vol = np.where(iv["status"].to_numpy() == "OK", iv["implied_vol"].to_numpy(float), np.nan)
    atm, _, _ = expiry_atm_vols(slices, k, vol, iv["option_type"].to_numpy() == "C", n_slices)
    valid_quotes = np.bincount(slices, weights=np.isfinite(vol), minlength=n_slices)
    per_slice = (
        iv.assign(slice=slices)
        .groupby("slice", sort=True)
        .agg(
            as_of_date=("as_of_date", "first"),
            symbol=("underlying", "first"),
            expiry=("expiry", "first"),
            time_years=("time_to_expiry_years", "first"),
            as_of=("as_of", "first"),
            spot=("spot", "first"),
        )
    )
    per_slice["atm_vol"] = atm
    per_slice["quotes_used"] = valid_quotes.astype(np.int64)
    days = per_slice.groupby(["as_of_date", "symbol"], sort=True).ngroup().to_numpy()
    n_days = int(days.max()) + 1
    cm = constant_maturity_vol(days, per_slice["time_years"].to_numpy(float), atm, tenor_days / 365.0, n_days)
    head = per_slice.groupby(days).first()
    near, far = cm.near_slice, cm.far_slice
    used = per_slice["quotes_used"].to_numpy(np.int64)

    def pick(column: str, index: np.ndarray, missing: Any = np.nan) -> np.ndarray:
        values = per_slice[column].to_numpy()
        return np.where(index >= 0, values[np.maximum(index, 0)], missing)

    out = pd.DataFrame(
        {
            "as_of_date": head["as_of_date"].to_numpy(),
            "symbol": head["symbol"].to_numpy(),
            "as_of": head["as_of"].to_numpy(),
            "tenor_days": tenor_days,
            "atm_vol": cm.atm_vol,
            "spot": head["spot"].to_numpy(float),
            "near_expiry": pick("expiry", near, None),
            "near_time_years": pick("time_years", near),
            "near_atm_vol": pick("atm_vol", near),
            "far_expiry": pick("expiry", far, None),
            "far_time_years": pick("time_years", far),
            "far_atm_vol": pick("atm_vol", far),
            "extrapolated": cm.extrapolated,
            "quotes_used": used[np.maximum(near, 0)] * (near >= 0) + used[np.maximum(far, 0)] * (far >= 0),
            "method": METHOD,
            "source": source,
        }
    )
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    return out[np.isfinite(out["atm_vol"].to_numpy(float))].reset_index(drop=True)[columns]


@dg.asset(
    group_name="volatility",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["rates_curve", "dividend_yields"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "Closing 30-day constant-maturity ATM implied vol per underlying and session, from the source's last "
        "option snapshot of the session (two expiries bracketing the tenor, the three OTM strikes nearest the "
        "forward on each side, validated with the option_quotes suite). Loaded with the price history: its "
        "day-on-day changes are the implied-vol moves that historical and Monte Carlo VaR apply to every option."
    ),
    metadata=table_definition_metadata("atm_vol_history"),
    check_specs=[
        dg.AssetCheckSpec(
            "source_quotes_valid",
            asset="atm_vol_history",
            blocking=True,
            description="The quotes used pass every option_quotes rule (failing rows go to quarantine).",
        ),
        dg.AssetCheckSpec(
            "atm_vol_plausible",
            asset="atm_vol_history",
            blocking=True,
            description=f"Every ATM vol within [{MIN_VOL}, {MAX_VOL}].",
        ),
    ],
)
def atm_vol_history(
    context: dg.AssetExecutionContext,
    config: AtmVolSettings,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    sessions = partition_sessions(context)
    source = market_data.get_source()
    label = partition_label(sessions)
    span = {"as_of_date": Between(sessions[0], sessions[-1])}
    curve_by_day = dict(tuple(wh.read("rates_curve", span).groupby("as_of_date")))
    div_by_day = dict(tuple(wh.read("dividend_yields", span).groupby("as_of_date")))
    chains = []
    for session in sessions:
        quotes = source.option_quotes(session)
        if quotes.empty:
            continue
        if session not in curve_by_day or session not in div_by_day:
            raise dg.Failure(f"no rates_curve / dividend_yields for {session}: load the price history first")
        chains.append(bracketing_quotes(quotes, curve_by_day[session], div_by_day[session], config))
    raw = pd.concat(chains, ignore_index=True) if chains else None
    quoted: list[dt.date] = []
    frames = []
    if raw is not None:
        now = pd.Timestamp.now(tz="UTC")
        ctx = ValidationContext(label, tuple(sessions), {s: min(session_close_utc(s), now) for s in sessions})
        report = validate("option_quotes", raw, ctx, market_data.quality)
        if not report.passed:
            quarantine = report.quarantine_frame("atm_vol_history")
            write_quarantine(context, wh, quarantine, asset="atm_vol_history", partition_key=label)
            yield dg.AssetCheckResult(
                check_name="source_quotes_valid",
                asset_key="atm_vol_history",
                passed=False,
                metadata={
                    "quotes_validated": len(raw),
                    "failed_rules": ", ".join(r.rule for r in report.failed),
                    "quarantined_rows": len(quarantine),
                    "where": "; ".join(report.location(p) for r in report.failed for p in r.failing_positions[:3]),
                },
            )
            raise dg.Failure(
                description=report.message(),
                metadata={
                    "failed_rules": ", ".join(r.rule for r in report.failed),
                    "quarantined_rows": len(quarantine),
                    "table_unchanged": "risk.atm_vol_history",
                },
            )
        for session, q in report.typed.groupby("as_of_date", sort=True):
            iv = implied_vol_frame(q, curve_by_day[session], div_by_day[session])
            iv["as_of_date"] = session
            frames.append(iv)
            quoted.append(session)
    iv_all = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rows = atm_vol_rows(iv_all, config.tenor_days, market_data.kind)
    bad = rows[~((rows["atm_vol"] >= MIN_VOL) & (rows["atm_vol"] <= MAX_VOL))]
    per_day = rows.groupby("as_of_date")["symbol"].count()
    preview = rows.tail(10).round(dict.fromkeys(rows.select_dtypes("number").columns, 4))
    yield from publish(
        context,
        wh,
        # only the sessions that had quotes: a session the source has no chain for keeps what is stored
        [TableWrite("atm_vol_history", rows, [{"as_of_date": s} for s in quoted])],
        checks=[
            dg.AssetCheckResult(
                check_name="source_quotes_valid",
                asset_key="atm_vol_history",
                passed=True,
                metadata={"quotes_validated": 0 if raw is None else len(raw)},
            ),
            dg.AssetCheckResult(
                check_name="atm_vol_plausible",
                asset_key="atm_vol_history",
                passed=bad.empty,
                metadata={
                    "rows": len(rows),
                    "outside_bounds": len(bad),
                    "sample": dg.MetadataValue.md(markdown_table(bad[["as_of_date", "symbol", "atm_vol"]], 20)),
                },
            ),
        ],
        metadata={
            "atm_vol_history": {
                "sessions_with_quotes": len(quoted),
                "sessions_without_quotes": len(sessions) - len(quoted),
                "sessions_kept_as_stored": ", ".join(str(s) for s in sessions if s not in quoted) or "none",
                "underlyings_per_session": f"{int(per_day.min())}..{int(per_day.max())}" if len(per_day) else "0",
                "extrapolated_rows": int(rows["extrapolated"].sum()),
                "preview": dg.MetadataValue.md(markdown_table(preview, 10)),
            }
        },
    )
