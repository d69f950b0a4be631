"""SABR slices and Heston surfaces beside the SVI fit, from the same implied vols, with a per-slice fit comparison."""

import datetime as dt
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import dagster as dg
import numba
import numpy as np
import pandas as pd
from pydantic import Field

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    map_in_processes,
    markdown_table,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.volatility.surfaces import GROUP, SnapshotSelection, snapshot_time
from risk_pipeline.kernel_warmup import cached_on_disk
from risk_pipeline.quant.heston import calibrate_heston
from risk_pipeline.quant.sabr import (
    DensityCheck,
    SabrFit,
    _calibrate_kernel,
    calibrate_sabr,
    density_check,
    density_checks,
)
from risk_pipeline.quant.surfaces import otm_mask
from risk_pipeline.resources import WarehouseResource

SABR_FORMULA = "obloj"
#: Fewer underlyings than this are fitted in the step's own process (starting spawned workers costs seconds).
MIN_JOBS_FOR_POOL = 8
#: Underlyings from which the SABR fits run compiled (``sabr._calibrate_kernel``) even before the kernel is in
#: numba's on-disk cache: compiling it costs about 3.4 CPU s, and the compiled fit saves about 1.0-1.5 ms a slice
#: (about 8 slices an underlying), so below some 300 underlyings a first run gains nothing (the sample's SABR fits
#: also run beside the Heston threads, off the step's longest thread). Once cached (the end of day's warm-up
#: compiles it) the kernel is always used. Both paths give the same fits, bit for bit.
SABR_KERNEL_MIN_UNDERLYINGS = 300


def sabr_compiled(n_underlyings: int) -> bool:
    """Whether the SABR fits of ``n_underlyings`` run compiled: many underlyings, or the kernel on disk already."""
    return n_underlyings >= SABR_KERNEL_MIN_UNDERLYINGS or cached_on_disk([_calibrate_kernel])


def usable_quotes(iv: pd.DataFrame) -> pd.DataFrame:
    """The quotes every surface model fits (as ``fit_surfaces`` selects them): status OK and out of the money."""
    return iv[(iv["status"] == "OK") & otm_mask(iv["strike"], iv["forward"], iv["option_type"] == "C")]


def sabr_rows(quotes: pd.DataFrame, beta: float, compiled: bool = True) -> list[dict[str, Any]]:
    """sabr_slices rows of one underlying: one SABR fit per expiry with at least 3 quotes (expiries in sorted order,
    each slice's quotes in their order in ``quotes``, as ``groupby("expiry", sort=True)`` gives them; the columns are
    taken out once rather than per slice); ``compiled`` as in ``calibrate_sabr`` (the same fits)."""
    codes, expiries = pd.factorize(quotes["expiry"].to_numpy(), sort=True)
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]  # groupby drops missing keys
    starts = np.searchsorted(codes[order], np.arange(len(expiries) + 1))
    strike = quotes["strike"].to_numpy(float)
    vol = quotes["implied_vol"].to_numpy(float)
    forwards = quotes["forward"].to_numpy(float)
    times = quotes["time_to_expiry_years"].to_numpy(float)
    slices = []
    for j, expiry in enumerate(expiries):
        idx = order[starts[j] : starts[j + 1]]
        if len(idx) < 3:
            continue
        forward = float(forwards[idx[0]])
        t = float(times[idx[0]])
        try:
            fit = calibrate_sabr(strike[idx], vol[idx], forward, t, beta, SABR_FORMULA, compiled=compiled)
        except ValueError as exc:
            raise ValueError(f"SABR fit of {quotes['underlying'].iloc[0]} {expiry}: {exc}") from exc
        slices.append((expiry, t, forward, fit))
    # the density checks of all the underlying's slices at once (each check the bits of density_check of its fit)
    densities = density_checks([fit for *_, fit in slices])
    return [sabr_row(*sl, density) for sl, density in zip(slices, densities, strict=True)]


def sabr_row(
    expiry: Any, time_to_expiry_years: float, forward: float, fit: SabrFit, density: DensityCheck | None = None
) -> dict[str, Any]:
    """One sabr_slices row: the slice's expiry, time and forward, the fit, and its density check (``density``:
    ``density_check(fit)``, taken if not given)."""
    density = density_check(fit) if density is None else density
    return {
        "expiry": expiry,
        "time_to_expiry_years": time_to_expiry_years,
        "forward": forward,
        "model": f"sabr:{fit.formula}",
        "sabr_alpha": fit.alpha,
        "sabr_beta": fit.beta,
        "sabr_rho": fit.rho,
        "sabr_nu": fit.nu,
        "rmse_vol_points": fit.rmse_vol_points,
        "n_quotes": fit.n_quotes,
        "converged": fit.converged,
        "butterfly_arbitrage_free": density.arbitrage_free,
        "min_density": density.min_density,
    }


def heston_fit(quotes: pd.DataFrame) -> tuple[dict[str, Any], pd.Series]:
    """heston_parameters row of one underlying and the model vol of every quote (index of ``quotes``)."""
    t = quotes["time_to_expiry_years"].to_numpy(float)
    k = np.log(quotes["strike"].to_numpy(float) / quotes["forward"].to_numpy(float))
    started = time.perf_counter()
    fit = calibrate_heston(t, k, quotes["implied_vol"].to_numpy(float))
    seconds = time.perf_counter() - started
    p = fit.params
    row = {
        "v0": p.v0,
        "kappa": p.kappa,
        "theta": p.theta,
        "xi": p.xi,
        "rho": p.rho,
        "feller_ok": p.feller_ok,
        "feller_ratio": p.feller_ratio,
        "rmse_vol_points": fit.rmse_vol_points,
        "max_abs_error_vol_points": fit.max_abs_error_vol_points,
        "n_quotes": fit.n_quotes,
        "n_expiries": fit.n_expiries,
        "converged": fit.converged,
        "spot": float(quotes["spot"].iloc[0]),
        "min_time_to_expiry_years": float(t.min()),
        "max_time_to_expiry_years": float(t.max()),
        "calibration_seconds": seconds,
    }
    return row, pd.Series(fit.model_vol, index=quotes.index)


def _heston_or_error(quotes: pd.DataFrame, single_thread: bool) -> tuple[dict[str, Any], pd.Series] | ValueError:
    """``heston_fit``, or the ValueError it raised; numba's parallel kernels on one thread if ``single_thread``."""
    if single_thread:
        numba.set_num_threads(1)  # per calling thread: the fits themselves are spread over threads
    try:
        return heston_fit(quotes)
    except ValueError as exc:
        return exc


def _fit_chunk(
    jobs: list[tuple[str, pd.DataFrame, float]], threads: int = 1, sabr_compiled: bool = True
) -> list[tuple[str, list[dict[str, Any]], dict[str, Any], pd.Series, str]]:
    """SABR slices and Heston surface of every job: (underlying, SABR rows, Heston row, Heston model vols, error);
    ``sabr_compiled``: ``sabr_rows``' ``compiled``.

    With ``threads > 1`` the Heston fits start at once on ``threads`` threads of this process while this thread
    fits the SABR slices: the Heston kernels release the GIL, so the SABR fits (Python and scipy) run beside
    them; each fit is the same computation as in turn. A SABR error takes precedence, as when the Heston fit
    ran only after a successful SABR fit (the Heston outcome of such an underlying, error or not, is dropped).
    """
    futures: list[Future[tuple[dict[str, Any], pd.Series] | ValueError]] = []
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and len(jobs) > 1 else None
    try:
        if pool is not None:
            futures = [pool.submit(_heston_or_error, quotes, True) for _, quotes, _ in jobs]
        sabr: list[list[dict[str, Any]] | ValueError] = []
        for _, quotes, beta in jobs:
            try:
                sabr.append(sabr_rows(quotes, beta, sabr_compiled))
            except ValueError as exc:
                sabr.append(exc)
        todo = [i for i, rows in enumerate(sabr) if not isinstance(rows, ValueError)]
        if pool is not None:
            fits = [futures[i].result() for i in todo]
        else:
            fits = [_heston_or_error(jobs[i][1], False) for i in todo]
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    heston = dict(zip(todo, fits, strict=True))
    out = []
    for i, (underlying, _, _) in enumerate(jobs):
        error = sabr[i] if isinstance(sabr[i], ValueError) else heston[i]
        if isinstance(error, ValueError):
            out.append((underlying, [], {}, pd.Series(dtype=float), str(error)))
        else:
            row, model_vol = heston[i]
            out.append((underlying, sabr[i], row, model_vol, ""))
    return out


def fit_models(
    iv: pd.DataFrame,
    svi: pd.DataFrame,
    betas: dict[str, float],
    default_beta: float,
    workers: int = 1,
    threads: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """sabr_slices, heston_parameters and vol_fit_comparison rows for one snapshot of implied vols; ``svi`` is
    the snapshot's vol_surface rows (their RMSE goes into the comparison). ``workers`` processes, each fitting
    Heston on ``threads`` threads."""
    usable = usable_quotes(iv)
    as_of = iv["as_of"].iloc[0]
    jobs = [(str(u), g, float(betas.get(str(u), default_beta))) for u, g in usable.groupby("underlying", sort=True)]
    # spawn, not fork: a step earlier in the same process may have started numba's OpenMP threads, and forking
    # such a process aborts the child ("fork() called from a process already using GNU OpenMP")
    chunk = partial(_fit_chunk, threads=threads, sabr_compiled=sabr_compiled(len(jobs)))
    fitted = map_in_processes(chunk, jobs, workers, min_jobs=MIN_JOBS_FOR_POOL, start="spawn")
    sabr_out, heston_out, vols = [], [], []
    for underlying, sabr, heston, model_vol, error in fitted:
        if error:
            raise dg.Failure(f"stochastic vol models for {underlying} at {as_of}: {error}")
        sabr_out += [{"as_of": as_of, "underlying": underlying, **r} for r in sabr]
        heston_out.append({"as_of": as_of, "underlying": underlying, **heston})
        vols.append(model_vol)
    sabr_frame = pd.DataFrame(sabr_out)
    heston_frame = pd.DataFrame(heston_out)
    heston_vol = pd.concat(vols) if vols else pd.Series(dtype=float)
    return sabr_frame, heston_frame, comparison(usable, heston_vol, sabr_frame, svi)


def group_rmse(err2: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """``sqrt`` of the mean of ``err2`` per group (``group``: each row's group number, -1 for none), NaNs skipped and
    NaN for a group without a number: the same operations as ``Series.mean`` on each group's rows in their order
    (pandas' ``nanops.nanmean``: NaNs set to 0, numpy's sum, divided by the count), without a Series per group."""
    order = np.argsort(group, kind="stable")
    values = err2[order]
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    out = np.empty(groups)
    for g in range(groups):
        v = values[bounds[g] : bounds[g + 1]]
        missing = np.isnan(v)
        count = v.size - int(missing.sum())
        if count < v.size:
            v = np.where(missing, 0.0, v)
        out[g] = np.sqrt(v.sum() / np.float64(count)) if count > 0 else np.nan
    return out


def comparison(usable: pd.DataFrame, heston_vol: pd.Series, sabr: pd.DataFrame, svi: pd.DataFrame) -> pd.DataFrame:
    """RMSE per slice of the three models on the same quotes (Heston's from its whole-surface fit)."""
    err2 = ((heston_vol.reindex(usable.index) - usable["implied_vol"]) * 100.0) ** 2
    grouped = usable.groupby(["underlying", "expiry"], sort=True)
    per_slice = grouped.agg(
        as_of=("as_of", "first"),
        time_to_expiry_years=("time_to_expiry_years", "first"),
        n_quotes=("implied_vol", "size"),
    ).reset_index()
    per_slice["heston_rmse_vol_points"] = group_rmse(err2.to_numpy(float), grouped.ngroup().to_numpy(), len(per_slice))
    svi_part = svi[["underlying", "expiry", "rmse_vol_points"]].rename(
        columns={"rmse_vol_points": "svi_rmse_vol_points"}
    )
    sabr_part = sabr[["underlying", "expiry", "rmse_vol_points"]].rename(
        columns={"rmse_vol_points": "sabr_rmse_vol_points"}
    )
    out = per_slice.merge(svi_part, on=["underlying", "expiry"], how="left").merge(
        sabr_part, on=["underlying", "expiry"], how="left"
    )
    models = ["svi", "sabr", "heston"]
    rmse = out[[f"{m}_rmse_vol_points" for m in models]].to_numpy(float)
    best = np.where(np.isnan(rmse), np.inf, rmse).argmin(axis=1)
    out["best_model"] = np.asarray(models)[best]
    cols = [
        "as_of",
        "underlying",
        "expiry",
        "time_to_expiry_years",
        "n_quotes",
        "svi_rmse_vol_points",
        "sabr_rmse_vol_points",
        "heston_rmse_vol_points",
        "best_model",
    ]
    return out[cols]


def summary_by_underlying(cmp: pd.DataFrame, heston: pd.DataFrame) -> pd.DataFrame:
    """Mean RMSE per slice by model and underlying, with Heston's whole-surface RMSE and Feller flag."""
    mean = (
        cmp.groupby("underlying")[["svi_rmse_vol_points", "sabr_rmse_vol_points", "heston_rmse_vol_points"]]
        .mean()
        .rename(columns=lambda c: "mean_slice_" + c)
    )
    surface = heston.set_index("underlying")[["rmse_vol_points", "feller_ok", "calibration_seconds"]].rename(
        columns={"rmse_vol_points": "heston_surface_rmse_vol_points"}
    )
    return mean.join(surface).reset_index().round(4)


class StochasticVolSettings(dg.Config):
    """Snapshot (default the session's latest), SABR beta per underlying (default 1, lognormal, for equities),
    the warning bounds on fit RMSE and the worker processes."""

    snapshot_time: str | None = None
    sabr_beta: dict[str, float] = Field(default_factory=dict)
    default_sabr_beta: float = 1.0
    max_sabr_rmse_vol_points: float = 2.0
    max_heston_rmse_vol_points: float = 5.0
    #: 1 fits in the step's process; more start spawned workers, which took longer than they saved on 2 busy cores
    workers: int = 1
    #: Threads of the Heston fits in each process (numba's kernels release the GIL); 1: one after the other
    threads: int = 2


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "sabr_slices",
            group_name=GROUP,
            deps=["implied_vols"],
            kinds={"pandas", "scipy"},
            owners=OWNERS,
            description=(
                "SABR slice per underlying and expiry (Hagan 2002 with Obloj's 2008 leading term, beta fixed per "
                "underlying) fitted to the same out-of-the-money mid vols as the SVI slices, vega weighted, with "
                "fit RMSE and a butterfly (risk-neutral density >= 0) flag."
            ),
            metadata=table_definition_metadata("sabr_slices"),
        ),
        dg.AssetSpec(
            "heston_parameters",
            group_name=GROUP,
            deps=["implied_vols"],
            kinds={"pandas", "scipy", "numba"},
            owners=OWNERS,
            description=(
                "Heston (v0, kappa, theta, xi, rho) per underlying calibrated to its whole surface of "
                "out-of-the-money mid vols (COS pricing, Levenberg-Marquardt), with fit RMSE and the Feller flag."
            ),
            metadata=table_definition_metadata("heston_parameters"),
        ),
        dg.AssetSpec(
            "vol_fit_comparison",
            group_name=GROUP,
            deps=["sabr_slices", "heston_parameters", "vol_surface"],
            kinds={"pandas"},
            owners=OWNERS,
            description="RMSE per slice of SVI, SABR and Heston on the same quotes, and the best model of each slice.",
            metadata=table_definition_metadata("vol_fit_comparison"),
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        session_check_spec(
            "parameters_valid",
            asset="heston_parameters",
            blocking=True,
            description="Heston parameters finite and in the model's domain, RMSE finite.",
        ),
        session_check_spec(
            "parameters_valid",
            asset="sabr_slices",
            blocking=True,
            description="SABR parameters finite and in the model's domain, RMSE finite.",
        ),
        session_check_spec(
            "fit_rmse_within_bound",
            asset="sabr_slices",
            description="Every SABR slice's RMSE under the configured bound (warning only).",
        ),
        session_check_spec(
            "fit_rmse_within_bound",
            asset="heston_parameters",
            description="Every Heston surface RMSE under the configured bound (warning only).",
        ),
    ],
)
def stochastic_vol_models(
    context: dg.AssetExecutionContext, config: StochasticVolSettings, warehouse: WarehouseResource
) -> Any:
    wh = warehouse.get()
    sabr_frames, heston_frames, cmp_frames = [], [], []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = snapshot_time(wh, session, SnapshotSelection(snapshot_time=config.snapshot_time), "implied_vols")
        iv = wh.read("implied_vols", {"as_of": as_of})
        if iv.empty:
            raise dg.Failure(f"no implied_vols stored for snapshot {as_of.isoformat()}: materialize implied_vols")
        svi = wh.read("vol_surface", {"as_of": as_of})
        sabr, heston, cmp = fit_models(
            iv, svi, dict(config.sabr_beta), config.default_sabr_beta, config.workers, config.threads
        )
        sabr_frames.append(sabr)
        heston_frames.append(heston)
        cmp_frames.append(cmp)
    sabr = pd.concat(sabr_frames, ignore_index=True)
    heston = pd.concat(heston_frames, ignore_index=True)
    cmp = pd.concat(cmp_frames, ignore_index=True)
    snapshots = [{"as_of": t} for t in sorted(heston["as_of"].unique())]
    summary = summary_by_underlying(cmp, heston)
    yield from publish(
        context,
        wh,
        [
            TableWrite("sabr_slices", sabr, snapshots),
            TableWrite("heston_parameters", heston.drop(columns="calibration_seconds"), snapshots),
            TableWrite("vol_fit_comparison", cmp, snapshots),
        ],
        checks=model_checks(sabr, heston, config),
        metadata={
            "sabr_slices": {
                "slices": dg.MetadataValue.int(len(sabr)),
                "mean_rmse_vol_points": dg.MetadataValue.float(round(float(sabr["rmse_vol_points"].mean()), 6)),
            },
            "heston_parameters": {
                "underlyings": dg.MetadataValue.int(len(heston)),
                "feller_ok": dg.MetadataValue.int(int(heston["feller_ok"].sum())),
                "max_calibration_seconds": dg.MetadataValue.float(round(float(heston["calibration_seconds"].max()), 4)),
            },
            "vol_fit_comparison": {"by_underlying": dg.MetadataValue.md(markdown_table(summary, 200))},
        },
    )


def model_checks(sabr: pd.DataFrame, heston: pd.DataFrame, config: StochasticVolSettings) -> list[dg.AssetCheckResult]:
    """The sabr_slices and heston_parameters checks, evaluated on the staged rows."""
    h_ok = (
        np.isfinite(heston[["v0", "kappa", "theta", "xi", "rho", "rmse_vol_points"]]).all(axis=1)
        & (heston[["v0", "kappa", "theta", "xi"]] > 0).all(axis=1)
        & (heston["rho"].abs() < 1)
    )
    s_ok = (
        np.isfinite(sabr[["sabr_alpha", "sabr_rho", "sabr_nu", "rmse_vol_points"]]).all(axis=1)
        & (sabr["sabr_alpha"] > 0)
        & (sabr["sabr_nu"] >= 0)
        & (sabr["sabr_rho"].abs() < 1)
    )
    rough_s = sabr[~(sabr["rmse_vol_points"] <= config.max_sabr_rmse_vol_points)]
    rough_h = heston[~(heston["rmse_vol_points"] <= config.max_heston_rmse_vol_points)]
    return [
        dg.AssetCheckResult(
            check_name="parameters_valid",
            asset_key="heston_parameters",
            passed=bool(h_ok.all()),
            metadata={"invalid_rows": dg.MetadataValue.md(markdown_table(heston[~h_ok], 10))},
        ),
        dg.AssetCheckResult(
            check_name="parameters_valid",
            asset_key="sabr_slices",
            passed=bool(s_ok.all()),
            metadata={"invalid_rows": dg.MetadataValue.md(markdown_table(sabr[~s_ok], 10))},
        ),
        dg.AssetCheckResult(
            check_name="fit_rmse_within_bound",
            asset_key="sabr_slices",
            passed=rough_s.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "bound_vol_points": config.max_sabr_rmse_vol_points,
                "slices_over_bound": dg.MetadataValue.md(
                    markdown_table(rough_s[["underlying", "expiry", "rmse_vol_points", "n_quotes"]], 20)
                ),
            },
        ),
        dg.AssetCheckResult(
            check_name="fit_rmse_within_bound",
            asset_key="heston_parameters",
            passed=rough_h.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "bound_vol_points": config.max_heston_rmse_vol_points,
                "underlyings_over_bound": dg.MetadataValue.md(
                    markdown_table(rough_h[["underlying", "rmse_vol_points", "n_quotes"]], 20)
                ),
            },
        ),
    ]
