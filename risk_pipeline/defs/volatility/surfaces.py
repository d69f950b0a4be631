"""Implied vols per quote and arbitrage-checked SVI surfaces per underlying."""

import datetime as dt
import html
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import expiry_close_utc
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    check_events,
    map_in_processes,
    markdown_svg,
    markdown_table,
    publish,
    session_check_spec,
    table_definition_metadata,
    table_schema,
)
from risk_pipeline.defs.svg import Series, line_chart_svg
from risk_pipeline.quant.chain import chain_implied_vols
from risk_pipeline.quant.curves import discount_factor, forward_price, parity_forward, zero_rate
from risk_pipeline.quant.implied_vol import IvStatus
from risk_pipeline.quant.surfaces import UnderlyingSurface, fit_underlyings, otm_mask
from risk_pipeline.quant.svi import batched_durrleman_g
from risk_pipeline.resources import ExportsResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse

GROUP = "volatility"
#: Fewer underlyings than this are fitted in the step's own process. The forked pool cost 0.55-0.9 CPU s more than
#: fitting the sample's 51 underlyings in-process (2.0 CPU s, about 40 ms each): a fixed cost that is under 10 % of
#: the fit from about 200 underlyings, where the second core's wall saving also outweighs it (500 names: pool).
MIN_UNDERLYINGS_FOR_POOL = 200


class SnapshotSelection(dg.Config):
    """Which option snapshot of the session to use (ISO-8601 UTC); default the latest stored."""

    snapshot_time: str | None = None


def snapshot_time(
    wh: Warehouse, session: dt.date, config: SnapshotSelection, table_name: str = "option_quotes"
) -> pd.Timestamp:
    """The configured snapshot, else the session's latest ``as_of`` in ``table_name`` (the step's own input)."""
    if config.snapshot_time:
        return pd.Timestamp(config.snapshot_time).tz_convert("UTC")
    if "as_of_date" in table(table_name).column_names:
        got = wh.query(f"SELECT MAX(as_of) AS t FROM risk.{table_name} WHERE as_of_date = ?", [session])
    else:  # the session's New York calendar day
        start = pd.Timestamp(session, tz="America/New_York").tz_convert("UTC")
        got = wh.query(
            f"SELECT MAX(as_of) AS t FROM risk.{table_name} WHERE as_of >= ? AND as_of < ?",
            [start, start + pd.Timedelta(days=1)],
        )
    if got.empty or pd.isna(got["t"].iloc[0]):
        raise dg.Failure(f"no snapshot stored in {table_name} for session {session}: materialize {table_name} first")
    return pd.Timestamp(got["t"].iloc[0]).tz_convert("UTC")


def implied_vol_frame(quotes: pd.DataFrame, curve: pd.DataFrame, dividends: pd.DataFrame) -> pd.DataFrame:
    """implied_vols rows for one snapshot: every input used is on the row."""
    if curve.empty:
        raise dg.Failure("no rates_curve rows for the session: cannot discount")
    as_of = quotes["as_of"]
    expiry_close = expiry_close_utc(quotes["expiry"])
    t = ((expiry_close - as_of).dt.total_seconds() / (365.0 * 86400.0)).to_numpy(float)
    rate = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), t)
    q_map = dict(zip(dividends["symbol"], dividends["dividend_yield"], strict=True))
    missing = sorted(set(quotes["underlying"]) - set(q_map))
    if missing:
        raise dg.Failure(f"no dividend_yields row for {missing[:10]}: cannot compute forwards")
    q = quotes["underlying"].map(q_map).to_numpy(float)
    spot = quotes["underlying_price"].to_numpy(float)
    strike = quotes["strike"].to_numpy(float)
    is_call = (quotes["option_type"] == "C").to_numpy(bool)
    american = (quotes["exercise_style"] == "american").to_numpy(bool)
    bid = quotes["bid"].to_numpy(float)
    ask = quotes["ask"].to_numpy(float)
    result, model = chain_implied_vols(bid, ask, spot, strike, t, rate, q, is_call, american)
    out = pd.DataFrame(
        {
            # the column as it is (tz-aware): to_numpy() built one Timestamp object per row
            "as_of": pd.to_datetime(as_of.reset_index(drop=True), utc=True),
            "underlying": quotes["underlying"].to_numpy(),
            "expiry": quotes["expiry"].to_numpy(),
            "strike": strike,
            "option_type": quotes["option_type"].to_numpy(),
            "bid": bid,
            "ask": ask,
            "mid": 0.5 * (bid + ask),
            "spot": spot,
            "forward": forward_price(spot, rate, q, t),
            "time_to_expiry_years": t,
            "rate": rate,
            "dividend_yield": q,
            "exercise_style": quotes["exercise_style"].to_numpy(),
            "model": model,
            "implied_vol": result.vol,
            "status": _STATUS_NAMES[result.status],
        }
    )
    return out


#: ``IvStatus`` names indexed by code (the status column without one enum lookup per row).
_STATUS_NAMES = np.array([IvStatus(i).name for i in range(max(IvStatus) + 1)], dtype=object)


def parity_forwards(iv: pd.DataFrame) -> pd.DataFrame:
    """Put-call-parity forward per European expiry next to the curve forward used."""
    rows = []
    euro = iv[iv["exercise_style"] == "european"]
    for (underlying, expiry), g in euro.groupby(["underlying", "expiry"], sort=True):
        calls = g[g["option_type"] == "C"].set_index("strike")["mid"]
        puts = g[g["option_type"] == "P"].set_index("strike")["mid"]
        both = calls.index.intersection(puts.index)
        f_curve = float(g["forward"].iloc[0])
        d = float(discount_factor(g["rate"].iloc[0], g["time_to_expiry_years"].iloc[0]))
        f_parity = parity_forward(both.to_numpy(float), calls[both].to_numpy(), puts[both].to_numpy(), d, f_curve)
        rows.append(
            {
                "underlying": underlying,
                "expiry": expiry,
                "forward": f_curve,
                "parity_forward": f_parity,
                "relative_difference": f_parity / f_curve - 1.0 if np.isfinite(f_parity) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["underlying", "expiry", "forward", "parity_forward", "relative_difference"])


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["option_quotes", "rates_curve", "dividend_yields"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "Implied vol of every quote's mid (BSM for European, Bjerksund-Stensland 2002 for American "
        "exercise) with the spot, forward, rate, dividend yield and time used; invalid quotes carry "
        "NULL and a status (BELOW_INTRINSIC, ABOVE_UPPER_BOUND, ZERO_PRICE, CROSSED, EXPIRED, ...)."
    ),
    metadata=table_definition_metadata("implied_vols"),
    check_specs=[
        session_check_spec(
            "forward_matches_put_call_parity",
            asset="implied_vols",
            description="Curve forward within 0.5 % of the put-call-parity forward of every European expiry.",
        )
    ],
)
def implied_vols(
    context: dg.AssetExecutionContext, config: SnapshotSelection, warehouse: WarehouseResource
) -> Iterator[Any]:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = snapshot_time(wh, session, config)
        quotes = wh.read("option_quotes", {"as_of": as_of})
        curve = wh.read("rates_curve", {"as_of_date": session})
        dividends = wh.read("dividend_yields", {"as_of_date": session})
        frames.append(implied_vol_frame(quotes, curve, dividends))
    out = pd.concat(frames, ignore_index=True)
    snapshots = sorted(out["as_of"].unique())
    written = wh.write("implied_vols", out, run_id=context.run.run_id, partitions=[{"as_of": t} for t in snapshots])
    parity = parity_forwards(out)
    worst = parity["relative_difference"].abs().max() if len(parity) else 0.0
    bad = parity[parity["relative_difference"].abs() > 0.005]
    status_counts = out["status"].value_counts().rename_axis("status").reset_index(name="quotes")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "dagster/column_schema": table_schema("implied_vols"),
            "snapshots": ", ".join(pd.Timestamp(t).isoformat() for t in snapshots),
            "status_counts": dg.MetadataValue.md(markdown_table(status_counts, 20)),
            "ok_fraction": float((out["status"] == "OK").mean()),
            "run_id": context.run.run_id,
        },
    )
    parity_check = dg.AssetCheckResult(
        check_name="forward_matches_put_call_parity",
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expiries_checked": len(parity),
            "worst_relative_difference": float(worst) if np.isfinite(worst) else -1.0,
            "outside_tolerance": dg.MetadataValue.md(markdown_table(bad, 20)),
        },
    )
    yield from check_events(context, [parity_check])


# ------------------------------------------------------------------------------------------ surfaces
_FitInput = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # expiry, time (years), ln(K/F), implied vol


def _fit_chunk(jobs: list[tuple[str, _FitInput]]) -> list[tuple[str, UnderlyingSurface | None, str]]:
    """Fit several underlyings in one batch (``fit_underlyings``): (underlying, surface or None, error)."""
    results = fit_underlyings([arrays for _, arrays in jobs])
    return [
        (u, r, "") if isinstance(r, UnderlyingSurface) else (u, None, str(r))
        for (u, _), r in zip(jobs, results, strict=True)
    ]


def _fit_jobs(usable: pd.DataFrame) -> list[tuple[str, _FitInput]]:
    """Each underlying's fit input (sorted by underlying, its rows in row order), split from whole-column arrays:
    the worker processes get four arrays per underlying, not a pickled DataFrame of every column."""
    codes, names = pd.factorize(usable["underlying"], sort=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    columns = (
        usable["expiry"].to_numpy()[order],
        usable["time_to_expiry_years"].to_numpy(float)[order],
        np.log(usable["strike"].to_numpy(float) / usable["forward"].to_numpy(float))[order],
        usable["implied_vol"].to_numpy(float)[order],
    )
    return [
        (str(u), tuple(c[lo:hi] for c in columns))  # type: ignore[misc]
        for u, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)
    ]


def fit_surfaces(iv: pd.DataFrame, workers: int = 2) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """vol_surface and vol_surface_grid rows for one snapshot, and the fitted surfaces by underlying (``workers``
    processes from ``MIN_UNDERLYINGS_FOR_POOL`` underlyings, else in this process: the same fits either way)."""
    usable = iv[(iv["status"] == "OK") & otm_mask(iv["strike"], iv["forward"], iv["option_type"] == "C")]
    jobs = _fit_jobs(usable)
    fitted = map_in_processes(_fit_chunk, jobs, workers, min_jobs=MIN_UNDERLYINGS_FOR_POOL)
    as_of = iv["as_of"].iloc[0]
    surfaces: dict[str, UnderlyingSurface] = {}
    for underlying, surface, error in fitted:
        if surface is None:
            raise dg.Failure(f"vol surface for {underlying} at {as_of}: {error}")
        surfaces[underlying] = surface
    forwards = usable.groupby(["underlying", "expiry"], sort=False)["forward"].first()
    order = [(u, i) for u, s in surfaces.items() for i in range(len(s.fits))]
    fits = [surfaces[u].fits[i] for u, i in order]
    names = [u for u, _ in order]
    labels = [surfaces[u].expiry_labels[i] for u, i in order]

    def column(attribute: str) -> np.ndarray:
        return np.array([getattr(f, attribute) for f in fits], dtype=float)

    quoted = np.array([surfaces[u].quoted_range[i] for u, i in order], dtype=float).reshape(-1, 2)
    a, b, rho, m, sigma = (column(p) for p in ("a", "b", "rho", "m", "sigma"))
    g_quoted = batched_durrleman_g(a, b, rho, m, sigma, np.linspace(quoted[:, 0], quoted[:, 1], 201, axis=-1))
    time_years = column("time_years")
    surface_rows = pd.DataFrame(
        {
            "as_of": [as_of] * len(order),
            "underlying": names,
            "expiry": labels,
            "time_to_expiry_years": time_years,
            "forward": forwards.loc[list(zip(names, labels, strict=True))].to_numpy(float),
            "model": [f"raw_svi:{f.method}" for f in fits],
            "svi_a": a,
            "svi_b": b,
            "svi_rho": rho,
            "svi_m": m,
            "svi_sigma": sigma,
            "rmse_vol_points": column("rmse_vol_points"),
            "n_quotes": np.array([f.n_quotes for f in fits], dtype=np.int64),
            "butterfly_arbitrage_free": np.array([bool(f.butterfly_arbitrage_free) for f in fits], dtype=bool),
            "calendar_arbitrage_free": np.array(
                [bool(surfaces[u].calendar.per_slice_arbitrage_free[i]) for u, i in order], dtype=bool
            ),
            "min_durrleman_g": column("min_durrleman_g"),
            "min_quoted_log_moneyness": quoted[:, 0],
            "max_quoted_log_moneyness": quoted[:, 1],
            "calendar_arbitrage_free_quoted": np.array(
                [bool(surfaces[u].calendar_quoted[i]) for u, i in order], dtype=bool
            ),
            "min_durrleman_g_quoted": g_quoted.min(axis=1),
        }
    )
    grid_k = [surfaces[u].grid.log_moneyness for u, _ in order]
    points = np.array([k.size for k in grid_k], dtype=np.intp)
    grid_rows = pd.DataFrame(
        {
            "as_of": [as_of] * int(points.sum()),
            "underlying": np.repeat(_objects(names), points),
            "expiry": np.repeat(_objects(labels), points),
            "log_moneyness": np.concatenate(grid_k),
            "time_to_expiry_years": np.repeat(time_years, points),
            "implied_vol": np.concatenate([surfaces[u].grid.implied_vol[i] for u, i in order]),
            "total_variance": np.concatenate([surfaces[u].grid.total_variance[i] for u, i in order]),
        }
    )
    return surface_rows, grid_rows, surfaces


def _objects(values: list[Any]) -> np.ndarray:
    """``values`` as a 1-D object array (no conversion of dates or tuples)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


#: Inline smile thumbnails stop once their markdown reaches this size (the rest are files under exports/).
INLINE_SMILES_MAX_BYTES = 120_000
#: Tenor of the headline ATM vol per key underlying (the slice nearest to it), calendar days.
HEADLINE_TENOR_DAYS = 30


#: Expiries drawn in an inline thumbnail (the shortest ones; the exported SVG shows every expiry).
THUMBNAIL_EXPIRIES = 6


def smile_thumbnails(quotes: pd.DataFrame, surfaces: dict[str, UnderlyingSurface], names: list[str]) -> dict[str, str]:
    """Small SVG plots (420 x 280 px) of quoted OTM vols (dots) and fitted smiles (lines) of the first
    ``THUMBNAIL_EXPIRIES`` expiries, one colour per expiry, by underlying (``smile_svg``; drawn as text, about 1 ms
    a plot, where matplotlib PNGs took about 0.1 s)."""
    by_underlying = _smile_dots(quotes)
    return {
        u: _smile_svg(u, by_underlying.get(u), surfaces[u], expiries=THUMBNAIL_EXPIRIES, width=420, height=280)
        for u in names
    }


_Dots = tuple[np.ndarray, np.ndarray, np.ndarray]  # expiry labels, ln(K/F), implied vol in %, in row order


def _smile_dots(quotes: pd.DataFrame) -> dict[str, _Dots]:
    """Each underlying's quoted dots (expiry, ln(K/F), vol %) in row order, split from whole-column arrays (one
    sort) instead of a DataFrame per underlying and per expiry."""
    codes, names = pd.factorize(quotes["underlying"], sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    expiry = quotes["expiry"].to_numpy()[order]
    k = np.log(quotes["strike"].to_numpy(float) / quotes["forward"].to_numpy(float))[order]
    vol = (quotes["implied_vol"].to_numpy(float) * 100)[order]
    return {
        str(u): (expiry[lo:hi], k[lo:hi], vol[lo:hi]) for u, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)
    }


def headline_atm_vol(surface: UnderlyingSurface, tenor_days: int = HEADLINE_TENOR_DAYS) -> float:
    """ATM (ln(K/F) = 0) vol of the slice whose expiry is nearest ``tenor_days``, annualized decimal."""
    fit = min(surface.fits, key=lambda f: abs(f.time_years - tenor_days / 365.0))
    return float(np.sqrt(max(float(_w(fit, np.zeros(1))[0]), 0.0) / fit.time_years))


def smile_metadata(
    thumbnails: dict[str, str], index_file: Path | None, files: int, atm_vols: dict[str, float]
) -> dict[str, Any]:
    """vol_surface metadata for the smiles: key names inline (within a byte budget), a link to every file,
    and each key name's headline ATM vol as a float (charted over time on the asset's Plots tab)."""
    parts, used, shown = [], 0, 0
    for underlying, svg in thumbnails.items():
        image = markdown_svg(svg, underlying)
        if used + len(image) > INLINE_SMILES_MAX_BYTES:
            break
        parts.append(f"**{underlying}**\n\n{image}")
        used, shown = used + len(image), shown + 1
    if index_file is not None:
        parts.append(f"{shown} key underlyings shown; every underlying's smile ({files} plots): `{index_file}`")
    meta: dict[str, Any] = {"smiles": dg.MetadataValue.md("\n\n".join(parts) or "(plots disabled)")}
    if index_file is not None:
        meta["smiles_all"] = dg.MetadataValue.path(str(index_file))
    meta["smile_plots_exported"] = dg.MetadataValue.int(files)
    for underlying, vol in atm_vols.items():
        meta[f"atm_vol_{HEADLINE_TENOR_DAYS}d_{underlying}"] = dg.MetadataValue.float(round(vol, 6))
    return meta


def smiles_index(exports: ExportsResource, partition_key: str) -> Path:
    """Where ``export_smiles`` puts the session's index page: exports/smiles/<session>/index.html."""
    return (Path(exports.root) / "smiles" / partition_key / "index.html").resolve()


def smile_svg(
    underlying: str,
    quotes: pd.DataFrame,
    surface: UnderlyingSurface,
    *,
    expiries: int | None = None,
    width: int = 800,
    height: int = 500,
) -> str:
    """The smile plot of every expiry (the first ``expiries``) as SVG text: quoted OTM vols (dots), fitted smiles
    (lines)."""
    dots = (
        quotes["expiry"].to_numpy(),
        np.log(quotes["strike"].to_numpy(float) / quotes["forward"].to_numpy(float)),
        quotes["implied_vol"].to_numpy(float) * 100,
    )
    return _smile_svg(underlying, dots, surface, expiries=expiries, width=width, height=height)


def _smile_svg(
    underlying: str,
    dots: _Dots | None,
    surface: UnderlyingSurface,
    *,
    expiries: int | None = None,
    width: int = 800,
    height: int = 500,
) -> str:
    """``smile_svg`` from the underlying's ``_smile_dots`` (None: no quotes)."""
    k_grid = np.linspace(-0.6, 0.6, 121)
    empty = np.empty(0)
    series = []
    for label, fit in list(zip(surface.expiry_labels, surface.fits, strict=True))[:expiries]:
        if dots is None:
            k, vol = empty, empty
        else:
            rows = dots[0] == label
            k, vol = dots[1][rows], dots[2][rows]
        series.append(
            Series(
                label=str(label),
                line_x=k_grid,
                line_y=np.sqrt(np.maximum(_w(fit, k_grid), 0) / fit.time_years) * 100,
                dots_x=k,
                dots_y=vol,
            )
        )
    return line_chart_svg(
        series, title=f"{underlying} smiles", x_label="ln(K/F)", y_label="implied vol (%)", width=width, height=height
    )


def full_smiles(quotes: pd.DataFrame, surfaces: dict[str, UnderlyingSurface]) -> dict[str, str]:
    """Every underlying's full-size smile plot (every expiry) as SVG text, by underlying."""
    by_underlying = _smile_dots(quotes)
    return {u: _smile_svg(u, by_underlying.get(u), surfaces[u]) for u in sorted(surfaces)}


def export_smiles(exports: ExportsResource, partition_key: str, plots: dict[str, str]) -> Path:
    """The SVG plots as exports/smiles/<session>/<underlying>.svg with an index.html showing them all."""
    for u, svg in plots.items():
        exports.write_bytes(f"smiles/{partition_key}/{u}.svg", svg.encode())
    body = "\n".join(
        f'<h2>{html.escape(u)}</h2><img src="{html.escape(u)}.svg" alt="{html.escape(u)} smiles">' for u in plots
    )
    page = f"<!doctype html><title>Smiles {partition_key}</title><h1>Implied vol smiles, {partition_key}</h1>\n{body}\n"
    path = exports.write_bytes(f"smiles/{partition_key}/index.html", page.encode())
    assert path == smiles_index(exports, partition_key)
    return path


def _w(fit: Any, k: np.ndarray) -> np.ndarray:
    from risk_pipeline.quant.svi import svi_total_variance

    return svi_total_variance(fit, k)


class SurfaceSettings(dg.Config):
    """Snapshot (default the session's latest), fit-quality bound and parallelism of the fit."""

    snapshot_time: str | None = None
    max_rmse_vol_points: float = 2.0
    #: Worker processes of the fit, used from ``MIN_UNDERLYINGS_FOR_POOL`` underlyings
    workers: int = 2
    smile_plots: bool = True
    #: Underlyings whose smile thumbnail and headline ATM vol go into the metadata: the most quoted ones.
    inline_smiles: int = 4


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "vol_surface",
            group_name=GROUP,
            deps=["implied_vols"],
            kinds={"pandas", "scipy"},
            owners=OWNERS,
            description=(
                "Raw-SVI slice per underlying and expiry fitted to out-of-the-money mid vols (vega "
                "weighted), with fit RMSE in vol points and butterfly (Durrleman g >= 0) and calendar "
                "(total variance non-decreasing in expiry) arbitrage flags."
            ),
            metadata=table_definition_metadata("vol_surface"),
        ),
        dg.AssetSpec(
            "vol_surface_grid",
            group_name=GROUP,
            deps=["vol_surface"],
            kinds={"pandas"},
            owners=OWNERS,
            description="The fitted surface on ln(K/F) from -0.6 to 0.6 (step 0.05) for every expiry.",
            metadata=table_definition_metadata("vol_surface_grid"),
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        session_check_spec(
            "grid_vols_finite",
            asset="vol_surface_grid",
            blocking=True,
            description="No NaN or non-positive vol anywhere on the grid.",
        ),
        session_check_spec(
            "fit_rmse_within_bound",
            asset="vol_surface",
            blocking=True,
            description=(
                "Every slice's fit RMSE under the configured bound (vol points); slices of fewer than 3 quotes "
                "expiring within 7 days are reported, not held to it."
            ),
        ),
        session_check_spec(
            "arbitrage_free",
            asset="vol_surface",
            description="Butterfly and calendar arbitrage flags (warning only).",
        ),
    ],
)
def vol_surfaces(
    context: dg.AssetExecutionContext, config: SurfaceSettings, warehouse: WarehouseResource, exports: ExportsResource
) -> Any:
    wh = warehouse.get()
    surface_frames, grid_frames = [], []
    smiles: dict[str, Any] = {"smiles": dg.MetadataValue.md("(plots disabled)")}
    exported: tuple[str, dict[str, str]] | None = None
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = snapshot_time(wh, session, SnapshotSelection(snapshot_time=config.snapshot_time), "implied_vols")
        iv = wh.read("implied_vols", {"as_of": as_of})
        if iv.empty:
            raise dg.Failure(f"no implied_vols stored for snapshot {as_of.isoformat()}: materialize implied_vols")
        surface_rows, grid_rows, surfaces = fit_surfaces(iv, config.workers)
        surface_frames.append(surface_rows)
        grid_frames.append(grid_rows)
        if config.smile_plots and key == context.partition_keys[-1]:
            usable = iv[(iv["status"] == "OK") & otm_mask(iv["strike"], iv["forward"], iv["option_type"] == "C")]
            counts = usable["underlying"].value_counts()
            key_names = sorted(surfaces, key=lambda u: (-int(counts.get(u, 0)), u))[: max(config.inline_smiles, 0)]
            thumbnails = smile_thumbnails(usable, surfaces, key_names)
            exported = (key, full_smiles(usable, surfaces))
            atm = {u: headline_atm_vol(surfaces[u]) for u in key_names}
            smiles = smile_metadata(thumbnails, smiles_index(exports, key), len(surfaces), atm)
    surface = pd.concat(surface_frames, ignore_index=True)
    grid = pd.concat(grid_frames, ignore_index=True)
    snapshots = [{"as_of": t} for t in sorted(surface["as_of"].unique())]
    quality = (
        surface.groupby("underlying")
        .agg(
            expiries=("expiry", "count"),
            mean_rmse_vol_pts=("rmse_vol_points", "mean"),
            max_rmse_vol_pts=("rmse_vol_points", "max"),
            butterfly_ok=("butterfly_arbitrage_free", "all"),
            calendar_ok=("calendar_arbitrage_free", "all"),
        )
        .reset_index()
        .round(3)
    )
    yield from publish(
        context,
        wh,
        [TableWrite("vol_surface", surface, snapshots), TableWrite("vol_surface_grid", grid, snapshots)],
        checks=surface_checks(surface, grid, config.max_rmse_vol_points),
        metadata={
            "vol_surface": {
                "fit_quality": dg.MetadataValue.md(markdown_table(quality, 200)),
                "slices": dg.MetadataValue.int(len(surface)),
                "mean_rmse_vol_points": dg.MetadataValue.float(round(float(surface["rmse_vol_points"].mean()), 6)),
                "max_rmse_vol_points": dg.MetadataValue.float(round(float(surface["rmse_vol_points"].max()), 6)),
                "arbitrage_free_slices": dg.MetadataValue.int(
                    int((surface["butterfly_arbitrage_free"] & surface["calendar_arbitrage_free"]).sum())
                ),
                **smiles,
            }
        },
    )
    if exported is not None:  # only once the surfaces they plot are published
        export_smiles(exports, *exported)


def surface_checks(surface: pd.DataFrame, grid: pd.DataFrame, max_rmse_vol_points: float) -> list[dg.AssetCheckResult]:
    """The vol_surface and vol_surface_grid checks, evaluated on the staged rows."""
    bad_grid = grid[~(np.isfinite(grid["implied_vol"]) & (grid["implied_vol"] > 0))]
    # a slice of two quotes expiring within a week is set by the arbitrage constraints, not by its quotes (five
    # parameters, two points): its vol-point RMSE is reported, not held to the bound
    exempt = (surface["n_quotes"] < 3) & (surface["time_to_expiry_years"] < 7.0 / 365.0)
    too_rough = surface[~(surface["rmse_vol_points"] <= max_rmse_vol_points) & ~exempt]
    arb = surface[~(surface["butterfly_arbitrage_free"] & surface["calendar_arbitrage_free"])]
    return [
        dg.AssetCheckResult(
            check_name="grid_vols_finite",
            asset_key="vol_surface_grid",
            passed=bad_grid.empty,
            metadata={"bad_points": len(bad_grid), "sample": dg.MetadataValue.md(markdown_table(bad_grid, 10))},
        ),
        dg.AssetCheckResult(
            check_name="fit_rmse_within_bound",
            asset_key="vol_surface",
            passed=too_rough.empty,
            metadata={
                "bound_vol_points": max_rmse_vol_points,
                "worst_rmse_vol_points": float(surface["rmse_vol_points"].max()),
                "slices_over_bound": dg.MetadataValue.md(
                    markdown_table(too_rough[["underlying", "expiry", "rmse_vol_points", "n_quotes"]], 20)
                ),
                "slices_over_bound_exempt": dg.MetadataValue.md(
                    markdown_table(
                        surface[exempt & ~(surface["rmse_vol_points"] <= max_rmse_vol_points)][
                            ["underlying", "expiry", "rmse_vol_points", "n_quotes"]
                        ],
                        20,
                    )
                ),
            },
        ),
        dg.AssetCheckResult(
            check_name="arbitrage_free",
            asset_key="vol_surface",
            passed=arb.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "slices_with_arbitrage": len(arb),
                "butterfly_violations": int((~surface["butterfly_arbitrage_free"]).sum()),
                "calendar_violations": int((~surface["calendar_arbitrage_free"]).sum()),
                "calendar_violations_where_quoted": int((~surface["calendar_arbitrage_free_quoted"]).sum()),
                "butterfly_violations_where_quoted": int((surface["min_durrleman_g_quoted"] < 0).sum()),
                "slices": dg.MetadataValue.md(
                    markdown_table(arb[["underlying", "expiry", "min_durrleman_g", "calendar_arbitrage_free"]], 20)
                ),
            },
        ),
    ]
