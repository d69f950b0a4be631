"""``risk-pipeline`` command line: run the main job on the embedded default and print a summary."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from risk_pipeline.paths import PROJECT_ROOT, warehouse_url
from risk_pipeline.warehouse import Warehouse

#: The embedded instance's dagster.yaml (SQLite storage in DAGSTER_HOME); see the README's Operations.
EMBEDDED_INSTANCE_YAML = """\
# risk_pipeline embedded instance (written by `risk-pipeline init-home`): SQLite storage in this folder.
storage:
  # Dagster's SQLite storage whose event log keeps its connections open (risk_pipeline/dagster_storage.py)
  custom:
    module: risk_pipeline.dagster_storage
    class: TunedSqliteStorage
    config:
      base_dir:
        env: DAGSTER_HOME
telemetry:
  enabled: false
run_queue:
  # every run writes the one DuckDB warehouse: the daemon starts them one at a time, in order
  max_concurrent_runs: 1
run_launcher:
  # the default launcher plus a liveness probe of each run worker (a run killed with kill -9 is failed)
  module: risk_pipeline.run_launcher
  class: MonitoredRunLauncher
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  # a dead run worker fails its run (the launcher cannot resume one)
  max_resume_run_attempts: 0
  # the backstop for a run worker that hangs alive
  max_runtime_seconds: 7200
  poll_interval_seconds: 30
"""


def _prepare_dagster_home() -> Path:
    """DAGSTER_HOME, defaulting to the embedded instance on SQLite in the project's ``.dagster_home/``.

    Unset, it is the project folder when the command runs there (its dagster.yaml is the embedded default,
    with storage in ``.dagster_home/``), otherwise ``.dagster_home/`` itself; both use the same storage files.
    In any folder but the project's, writes the embedded dagster.yaml when there is none, or one this command
    wrote before.
    """
    default = PROJECT_ROOT if Path.cwd().resolve() == PROJECT_ROOT.resolve() else PROJECT_ROOT / ".dagster_home"
    if not (default / "dagster.yaml").exists() and default == PROJECT_ROOT:
        default = PROJECT_ROOT / ".dagster_home"  # an installed package without the project's files
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(default)))
    if home.resolve() == PROJECT_ROOT.resolve():
        (PROJECT_ROOT / ".dagster_home").mkdir(exist_ok=True)
        return home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    ours = not config.exists() or config.read_text().startswith(("# risk_pipeline embedded", "# embedded default"))
    if ours and (not config.exists() or config.read_text() != EMBEDDED_INSTANCE_YAML):
        config.write_text(EMBEDDED_INSTANCE_YAML)
    return home


def init_warehouse(args: argparse.Namespace) -> int:
    """Create schema ``risk`` and every contract table (or check them): the production migration step."""
    warehouse = Warehouse(warehouse_url())
    warehouse.ensure_tables()
    print(f"{warehouse.describe()}: every contract table present and matching")
    return 0


def init_home(args: argparse.Namespace) -> int:
    """Create or update DAGSTER_HOME's embedded dagster.yaml (used by `make dev` and `make demo`) and create the
    instance's storage, so a daemon and a webserver started together do not race to create the same tables."""
    import dagster as dg

    home = _prepare_dagster_home()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.get_runs(limit=1)
        instance.get_daemon_heartbeats()
    finally:
        instance.dispose()
    print(home / "dagster.yaml")
    return 0


def _run_job(
    job_name: str,
    partition_key: str | None,
    *,
    start: str | None = None,
    end: str | None = None,
    run_config: dict | None = None,
    cached: bool | None = None,
) -> tuple[bool, dict[str, tuple[int, int]], float]:
    """Run a job in this process through the instance, as a run of code location ``risk_pipeline`` (so the UI
    lists it under the job and can re-execute it); returns success, (passed, failed) checks per asset and
    seconds. ``cached``: whether the history's kernels were on disk (``kernel_warmup.cached_on_disk``; None: look
    now)."""
    import dagster as dg

    if job_name == "end_of_day_job":
        # the end of day's kernels, compiled in a separate process since the demo started (``demo``): wait for
        # it, so that the steps load them from numba's cache instead of compiling them a second time here
        from risk_pipeline.kernel_warmup import END_OF_DAY_WARMUP

        warmup = END_OF_DAY_WARMUP.wait()
        if warmup.startswith("kernel warm-up failed"):  # some kernels compile in the steps, as without it
            print(f"  end of day: {warmup}", file=sys.stderr)
    if job_name == "price_history_job":
        # a first run's history kernels compile in a separate process while the run is created and its first
        # steps run (the resource would start it only once the run exists)
        from risk_pipeline.kernel_warmup import HISTORY_WARMUP

        HISTORY_WARMUP.start(cached)
    instance = dg.DagsterInstance.get()
    tags = {}
    if start and end:
        tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    if partition_key is not None:
        tags["dagster/partition"] = partition_key
    began = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result = launch_in_process(instance, job_name, tags, {**quiet, **(run_config or {})})
    seconds = time.perf_counter() - began
    checks: dict[str, tuple[int, int]] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            key = data.asset_key.to_user_string()
            passed, failed = checks.get(key, (0, 0))
            checks[key] = (passed + int(data.passed), failed + int(not data.passed))
            if not data.passed and data.severity.value == "WARN":
                WARNINGS.append(f"{key}.{data.check_name}")
    print_step_times(result)
    for message in step_failure_messages(result):
        print(message, file=sys.stderr)
    return result.success, checks, seconds


#: The code location name of the definitions (as in workspace.yaml, deploy/workspace.yaml and ``dg dev``).
CODE_LOCATION = "risk_pipeline"


def launch_in_process(instance: Any, job_name: str, tags: dict[str, str], run_config: dict[str, Any]) -> Any:
    """Create the run in ``instance`` with the origin of code location ``risk_pipeline`` and execute it here
    (one process, steps in process: no run worker or process per step to start)."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    module, attribute = "risk_pipeline.definitions", "defs"
    repository = ReconstructableRepository.for_module(module, attribute, str(PROJECT_ROOT))
    recon_job = repository.get_reconstructable_job(job_name)
    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=module, attribute=attribute, working_directory=str(PROJECT_ROOT)
    )
    location = InProcessCodeLocationOrigin(target, location_name=CODE_LOCATION)
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name)
    job_def = recon_job.get_definition()
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config,
        tags={**job_def.tags, **tags},
        remote_job_origin=origin,
        job_code_origin=recon_job.get_python_origin(),
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    return execute_run(recon_job, run, instance, raise_on_error=False)


def print_step_times(result: Any) -> None:
    """One line per step of the run: its wall time and how it ended."""
    outcome = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "FAILED"}
    for event in result.all_events:
        if event.event_type_value in outcome:
            ms = getattr(event.event_specific_data, "duration_ms", None)
            took = f"{ms / 1000:6.1f} s" if ms is not None else "      -"
            print(f"  {event.step_key:<28} {took}  {outcome[event.event_type_value]}")
        elif event.event_type_value == "STEP_SKIPPED":
            print(f"  {event.step_key:<28}      -    skipped")


#: Warning-severity checks that failed in this process's runs (they do not block).
WARNINGS: list[str] = []


def step_failure_messages(result: Any) -> list[str]:
    """Each failed step's own description (a data-quality Failure names file, row and rule)."""
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        data = event.event_specific_data
        user = getattr(data, "user_failure_data", None)
        text = user.description if user is not None and user.description else None
        if text is None:
            error = data.error
            text = error.cause.message if error.cause is not None else error.message
        messages.append(f"step {event.step_key} failed: {text}")
    return messages


def _stored_sessions(warehouse: Any, name: str) -> set[dt.date]:
    if not warehouse.table_exists(name):
        return set()
    got = warehouse.query(f"SELECT DISTINCT as_of_date FROM risk.{name}")["as_of_date"]
    return {pd.Timestamp(d).date() for d in got}


def _session_with_gap_events(resources: dict[str, Any], latest: dt.date, lookback: int = 60) -> tuple[dt.date, str]:
    """The latest session at or before ``latest`` with an event inside its lead window for a held name or the whole
    book (so the demo exercises the gap-risk layer), and what that event is; ``latest`` itself when none is found
    in ``lookback`` sessions."""
    from risk_pipeline.calendar import sessions
    from risk_pipeline.event_windows import events_in_window, load_gap_risk_config

    market_data = resources["market_data"]
    source = market_data.get_source()
    calendar = pd.concat([source.earnings_events(), market_data.macro_events()], ignore_index=True)
    leads = load_gap_risk_config().leads
    # the synthetic source's held names without its positions (pricing their option legs would compile the exact
    # American engine here, before the history's kernel warm-up starts)
    held = getattr(source, "held_symbols", None) or (lambda day: set(source.positions(day)["symbol"]))
    for day in reversed(sessions(latest - dt.timedelta(days=2 * lookback), latest)[-lookback:]):
        found = events_in_window(calendar, day, leads, held(day))
        if len(found):
            names = ", ".join(
                f"{r.event_type} {'' if pd.isna(r.symbol) else r.symbol}".strip() for r in found.itertuples()
            )
            return day, names
    return latest, "none"


def demo(args: argparse.Namespace) -> int:
    """History for the lookback window, then the whole graph for the session; prints a summary."""
    # from a clean state (the history's kernels not on disk), the end of day's kernels compile in a separate
    # process from now on, beside this process's setup and the history run (with its own warm-up processes); the
    # history's warm-up is decided now too (the end of day's process writes some of the same kernels' indexes)
    from risk_pipeline.kernel_warmup import END_OF_DAY_WARMUP, cached_on_disk, history_kernels

    cached = cached_on_disk(history_kernels())
    END_OF_DAY_WARMUP.start(cached)
    home = _prepare_dagster_home()
    from risk_pipeline.calendar import latest_closed_session, partition_start, sessions
    from risk_pipeline.resources import resources_from_env

    now = pd.Timestamp.now(tz="UTC")
    resources = resources_from_env()
    if args.date:
        session = dt.date.fromisoformat(args.date)
    else:
        session, events = _session_with_gap_events(resources, latest_closed_session(now))
        print(f"risk_pipeline demo: gap-risk events in window at {session}: {events}")
    window = [d for d in sessions(partition_start(), session) if d < session][-args.history_sessions :]
    # one connection for the checks before the runs and one for the summary after them, not one per query (the
    # summary makes about 150; opening a DuckDB file costs about 16 ms of CPU); closed while the runs write
    warehouse = Warehouse(warehouse_url(), keep_open=True)
    try:
        warehouse.ensure_tables()
        loaded = _stored_sessions(warehouse, "market_prices")
        if resources["market_data"].kind != "packaged":  # type: ignore[attr-defined]  # a source with option quotes
            loaded &= _stored_sessions(warehouse, "atm_vol_history")
    finally:
        warehouse.close()
    missing = [d for d in window if d not in loaded]
    print(f"risk_pipeline demo: session {session}, DAGSTER_HOME={home}")
    ok = True
    all_checks: dict[str, tuple[int, int]] = {}
    if missing:
        # one run for the missing range (sessions already stored are rewritten only if inside it)
        ok, checks, secs = _run_job(
            "price_history_job", None, start=missing[0].isoformat(), end=window[-1].isoformat(), cached=cached
        )
        all_checks.update(checks)
        n = len([d for d in window if d >= missing[0]])
        status = "ok" if ok else "FAILED"
        print(f"  history {missing[0]}..{window[-1]} ({n} sessions, one run): {status} in {secs:.1f} s")
    elif window:
        print(f"  history {window[0]}..{window[-1]} ({len(window)} sessions) already in the warehouse")
    if ok:
        ok, checks, secs = _run_job("end_of_day_job", session.isoformat())
        for k, (p, f) in checks.items():
            p0, f0 = all_checks.get(k, (0, 0))
            all_checks[k] = (p0 + p, f0 + f)
        print(f"  end_of_day_job {session}: {'ok' if ok else 'FAILED'} in {secs:.1f} s")
    try:
        _print_summary(warehouse, session, all_checks)
    finally:
        warehouse.close()
    if not ok:
        print("result: BLOCKED (see messages above; bad rows are in risk.quarantine)")
    elif WARNINGS:
        print(f"result: ok; every blocking check passed; warning checks failed: {', '.join(WARNINGS)}")
    else:
        print("result: ok; every check passed")
    return 0 if ok else 1


def _print_summary(warehouse: Warehouse, session: dt.date, all_checks: dict[str, tuple[int, int]]) -> None:
    """The demo's tables (rows of the session, in total, checks passed), views and books."""
    print(f"\nwarehouse: {warehouse.describe()}")
    print(f"{'table':<22}{'rows (session)':>16}{'rows (total)':>14}{'checks passed':>16}")
    from risk_pipeline.contracts import TABLES

    for name, t in TABLES.items():
        if not warehouse.table_exists(name):
            continue
        total = warehouse.row_count(name)
        if total == 0 and name not in all_checks:
            continue
        day_rows = ""
        if "as_of_date" in t.column_names:
            day_rows = str(warehouse.row_count(name, {"as_of_date": session}))
        passed, failed = all_checks.get(name, (0, 0))
        checks_text = f"{passed}/{passed + failed}" if passed + failed else "-"
        print(f"{name:<22}{day_rows:>16}{total:>14}{checks_text:>16}")
    views = (
        warehouse.query(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'risk' ORDER BY table_name"
        )
        if warehouse.engine == "postgres"
        else warehouse.query(
            "SELECT view_name AS table_name FROM duckdb_views() WHERE schema_name = 'risk' ORDER BY view_name"
        )
    )
    print("views: " + ", ".join(f"risk.{v}" for v in views["table_name"]))
    if warehouse.row_count("trading_state"):
        books = warehouse.query(
            "SELECT s.book, s.state, s.preservation_level, n.nav, g.dollar_delta, g.vega_per_vol_point "
            "FROM risk.trading_state s JOIN risk.book_nav n ON n.book = s.book AND n.as_of = s.as_of "
            "JOIN risk.portfolio_greeks g ON g.book = s.book AND g.as_of = s.as_of AND g.scope = 'total' "
            "WHERE s.as_of = (SELECT MAX(as_of) FROM risk.trading_state) ORDER BY s.book"
        )
        for b in books.itertuples(index=False):
            print(
                f"book {b.book}: {b.state} (preservation {b.preservation_level}), NAV {b.nav:,.0f}, "
                f"dollar delta {b.dollar_delta:,.0f}, vega/vol pt {b.vega_per_vol_point:,.0f}"
            )


def vol_forecast_eval(args: argparse.Namespace) -> int:
    """Walk-forward OOS loss of every model on the shipped S&P 500 history and the synthetic index."""
    from risk_pipeline.defs.volatility.forecasts import forecast_rows
    from risk_pipeline.quant.vol_forecast import VolForecastConfig
    from risk_pipeline.resources import MarketDataResource
    from risk_pipeline.sources.packaged import PackagedHistorySource

    cfg = VolForecastConfig(min_train=args.min_train, refit_every=args.refit_every)
    spx = PackagedHistorySource("sp500").history()
    synthetic = MarketDataResource(kind="synthetic", seed=7).get_source()
    synx = synthetic.market_prices(dt.date(2021, 1, 4), dt.date(2026, 11, 20))
    synx = synx[synx["symbol"] == "SYNX"].reset_index(drop=True)
    for label, bars in (
        ("SPX (arch.data.sp500, 1999-2018)", spx),
        ("SYNX (synthetic seed 7, 2021-2026)", synx),
    ):
        began = time.perf_counter()
        rows = pd.DataFrame(forecast_rows(label.split()[0], bars, cfg))
        secs = time.perf_counter() - began
        setup = f"min_train {cfg.min_train}, refit every {cfg.refit_every}"
        print(f"\n{label}: {len(bars)} sessions, {setup} ({secs:.1f} s)")
        table = rows.pivot_table(index="model", columns="horizon_days", values="oos_loss")
        table.columns = [f"QLIKE h={h}" for h in table.columns]
        n = rows.groupby("horizon_days")["n_oos"].max()
        print(table.round(4).to_string())
        print("OOS days per horizon: " + ", ".join(f"h={h}: {v}" for h, v in n.items()))
        chosen = rows[rows["selected"]][["horizon_days", "model", "selection_reason"]]
        for r in chosen.itertuples(index=False):
            print(f"  h={r.horizon_days}: {r.model} ({r.selection_reason})")
    return 0


def check_trade(args: argparse.Namespace) -> int:
    """Answer one order against the latest tables; prints JSON.

    Exit 0 approve, 3 resize, 4 reject, 5 reject because the check could not be made (warehouse
    missing, unreachable or locked; a malformed order). Never creates files or folders.
    """
    from risk_pipeline.pretrade_service import NOT_POSSIBLE, PreTradeService, decision_json, exit_code
    from risk_pipeline.quant.pretrade import PreTradeDecision

    try:
        expiry = dt.date.fromisoformat(args.expiry) if args.expiry else None
        warehouse = Warehouse(warehouse_url(), create=False)
        service = PreTradeService(warehouse, actor=args.actor, max_valuation_age_sessions=args.max_age_sessions)
    except Exception as exc:  # nothing to check against, or the order is malformed: reject, do not crash
        reason = f"{NOT_POSSIBLE}: {type(exc).__name__}: {exc}"
        decision = PreTradeDecision("reject", 0, float(args.quantity), (reason,), ())
    else:
        decision = service.check(
            args.book,
            args.side,
            args.quantity,
            position_id=args.position_id,
            symbol=args.symbol,
            expiry=expiry,
            strike=args.strike,
            option_type=args.option_type,
        )
    print(decision_json(decision))
    return exit_code(decision)


def size(args: argparse.Namespace) -> int:
    """Print the recommended size of one name (position_sizing at the latest published valuation) as JSON.

    Exit 0, or 4 when there is no recommendation (no published valuation, no signal for the name).
    """
    import json

    from risk_pipeline.errors import RiskDataError
    from risk_pipeline.sizing_service import SizingService

    try:
        out = SizingService(Warehouse(warehouse_url(), create=False)).size(args.book, args.symbol, args.confidence)
    except (RiskDataError, OSError) as exc:
        print(json.dumps({"book": args.book, "symbol": args.symbol, "error": str(exc)}, indent=2))
        return 4
    print(json.dumps(out, indent=2))
    return 0


def manual_control(args: argparse.Namespace) -> int:
    """halt / resume / emergency-stop: record the control (manual_controls + audit_trail), print it as JSON."""
    import json

    from risk_pipeline import controls

    warehouse = Warehouse(warehouse_url())
    try:
        if args.command == "halt":
            event = controls.halt(warehouse, args.book, args.reason, args.actor, hours=args.hours)
        elif args.command == "resume":
            event = controls.resume(warehouse, args.book, args.reason, args.actor)
        else:
            event = controls.emergency_stop(warehouse, args.reason, args.actor)
    except controls.ControlError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(event, indent=2))
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run the risk service (HTTP API) on uvicorn; settings reach every worker through RISK_SERVICE_* variables."""
    import uvicorn

    settings = {
        "RISK_SERVICE_MAX_AGE_SESSIONS": str(args.max_age_sessions),
        "RISK_SERVICE_POLL_SECONDS": str(args.poll_seconds),
        "RISK_SERVICE_MAX_BODY_BYTES": str(args.max_body_bytes),
        "RISK_SERVICE_DB_CONNECTIONS": str(args.db_connections),
    }
    if args.limits_file:
        settings["RISK_SERVICE_LIMITS_FILE"] = args.limits_file
    os.environ.update(settings)
    uvicorn.run(
        "risk_pipeline.service.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=not args.no_access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,  # open streams end 5 s after a shutdown signal
    )
    return 0


def var_backtest(args: argparse.Namespace) -> int:
    """Reference VaR backtests on the S&P 500 (arch) and the synthetic index; rows to var_backtest."""
    import numpy as np

    from risk_pipeline.quant.backtest import backtest, rolling_backtest
    from risk_pipeline.quant.reference_backtest import run_reference_backtest
    from risk_pipeline.resources import MarketDataResource
    from risk_pipeline.sources.packaged import PackagedHistorySource

    warehouse = Warehouse(warehouse_url())
    warehouse.ensure_tables()
    spx = PackagedHistorySource("sp500").history()
    synthetic = MarketDataResource(kind="synthetic", seed=7).get_source()
    synx = synthetic.market_prices(dt.date(2021, 1, 4), dt.date(2026, 11, 20))
    synx = synx[synx["symbol"] == "SYNX"].reset_index(drop=True)
    series = {"SPX": (spx, "arch.data.sp500"), "SYNX": (synx, "synthetic(seed=7)")}
    for name in args.series:
        bars, source = series[name]
        dates = list(bars["as_of_date"])
        for with_options in (False, True):
            label = f"reference:{name}:{'index_collar' if with_options else 'index'}"
            began = time.perf_counter()
            result = run_reference_backtest(
                bars["close"].to_numpy(float), with_options=with_options, n_scenarios=args.scenarios
            )
            secs = time.perf_counter() - began
            first, last = dates[result.day_index[0]], dates[result.day_index[-1] + 1]
            print(f"\n{label}: {len(result.pnl)} days {first}..{last} ({secs:.0f} s), 99 % 1-day VaR")
            print(
                f"{'method':<28}{'exceptions':>11}{'expected':>9}{'Kupiec p':>10}{'Christ. p':>10}"
                f"{'CC p':>8}{'green':>7}{'yellow':>7}{'red':>5}{'2008 worst':>11}"
            )
            rows = []
            for method, var in result.var.items():
                whole = backtest(result.pnl, var, 0.99, lag=0)
                windows = rolling_backtest(result.pnl, var, 0.99, window=250, lag=0)
                zones = [w.traffic_light for w in windows]
                in_2008 = [
                    w.traffic_light for w in windows if dates[result.day_index[w.window_end_index] + 1].year == 2008
                ]
                worst = max(in_2008, key=["green", "yellow", "red"].index) if in_2008 else "-"
                print(
                    f"{method:<28}{whole.exceptions:>11}{whole.expected_exceptions:>9.1f}"
                    f"{whole.kupiec_p_value:>10.3f}{whole.christoffersen_p_value:>10.3f}"
                    f"{whole.conditional_coverage_p_value:>8.3f}{zones.count('green'):>7}"
                    f"{zones.count('yellow'):>7}{zones.count('red'):>5}{worst:>11}"
                )
                for w in windows:
                    end = result.day_index[w.window_end_index] + 1
                    rows.append(
                        {
                            **w.to_row(),
                            "window_end": dates[end],
                            "window_start": dates[end - 249],
                            "book": label,
                            "method": method,
                            "expected_exceptions": w.expected_exceptions,
                            "source": f"{source}; {result.__class__.__name__} seed 0",
                        }
                    )
            frame = pd.DataFrame(rows)
            warehouse.write("var_backtest", frame, run_id=f"cli:var-backtest:{label}", partitions=[{"book": label}])
            assert np.isfinite(frame["kupiec_lr"]).all()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="risk-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="materialize the whole graph for one session on the configured storage")
    p_demo.add_argument(
        "--date",
        help="session (YYYY-MM-DD); default the latest closed session with a gap-risk event inside its lead "
        "window (searched back 60 sessions)",
    )
    p_demo.add_argument(
        "--history-sessions",
        type=int,
        default=760,
        help="sessions of daily history to load first as one run (default 760: the 500-session VaR look-back "
        "for each of the 250 backtest days, plus 10)",
    )
    p_demo.set_defaults(func=demo)
    p_home = sub.add_parser("init-home", help="write the embedded instance's dagster.yaml into DAGSTER_HOME")
    p_home.set_defaults(func=init_home)
    p_init = sub.add_parser("init-warehouse", help="create or check every contract table (production migration step)")
    p_init.set_defaults(func=init_warehouse)
    p_trade = sub.add_parser("check-trade", help="pre-trade check of one order against the latest tables")
    p_trade.add_argument("--book", required=True)
    p_trade.add_argument("--side", required=True, choices=["buy", "sell"])
    p_trade.add_argument("--quantity", required=True, type=float, help="shares or contracts")
    p_trade.add_argument("--position-id", help="an existing position of the book")
    p_trade.add_argument("--symbol", help="stock symbol, or the underlying of an option")
    p_trade.add_argument("--expiry", help="option expiry YYYY-MM-DD")
    p_trade.add_argument("--strike", type=float)
    p_trade.add_argument("--option-type", choices=["C", "P"])
    p_trade.add_argument("--actor", default="cli", help="who asks (recorded in audit_trail)")
    p_trade.add_argument(
        "--max-age-sessions",
        type=int,
        default=1,
        help="reject when the book's latest valuation is older than this many sessions (default 1)",
    )
    p_trade.set_defaults(func=check_trade)
    p_size = sub.add_parser("size", help="recommended position size of one name (position_sizing)")
    p_size.add_argument("--book", required=True)
    p_size.add_argument("--symbol", required=True)
    p_size.add_argument(
        "--confidence", type=float, default=0.0, help="minimum signal confidence; below it the size is 0 (default 0)"
    )
    p_size.set_defaults(func=size)
    default_actor = os.environ.get("USER", "cli")
    p_halt = sub.add_parser("halt", help="halt a book now (pre-trade rejects at once; the next run's state honors it)")
    p_halt.add_argument("--book", required=True, help="book to halt ('*' = every book)")
    p_halt.add_argument("--reason", required=True)
    p_halt.add_argument("--hours", type=float, help="lapse after this many hours (default: until resumed)")
    p_halt.add_argument("--actor", default=default_actor, help="who orders it (recorded in audit_trail)")
    p_halt.set_defaults(func=manual_control)
    p_resume = sub.add_parser("resume", help="lift the manual halt of a book ('*' lifts every halt)")
    p_resume.add_argument("--book", required=True)
    p_resume.add_argument("--reason", required=True)
    p_resume.add_argument("--actor", default=default_actor)
    p_resume.set_defaults(func=manual_control)
    p_stop = sub.add_parser("emergency-stop", help="halt every book until `resume --book '*'`")
    p_stop.add_argument("--reason", required=True)
    p_stop.add_argument("--actor", default=default_actor)
    p_stop.set_defaults(func=manual_control)
    p_serve = sub.add_parser(
        "serve", help="run the risk service (HTTP API: pre-trade checks, fills, documents, stream, metrics)"
    )
    p_serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; see README for TLS)")
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--workers", type=int, default=1, help="worker processes (use PostgreSQL for more than 1)")
    p_serve.add_argument(
        "--max-age-sessions",
        type=int,
        default=1,
        help="reject orders (and report not ready) when a book's valuation is older than this many sessions",
    )
    p_serve.add_argument("--poll-seconds", type=float, default=1.0, help="how often the tables are watched")
    p_serve.add_argument("--max-body-bytes", type=int, default=16_384, help="larger request bodies get 413")
    p_serve.add_argument("--limits-file", help="limits YAML (default data/limits/limits.yaml)")
    p_serve.add_argument(
        "--db-connections", type=int, default=4, help="PostgreSQL connections per worker answering orders at once"
    )
    p_serve.add_argument("--no-access-log", action="store_true", help="no per-request log line")
    p_serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p_serve.set_defaults(func=serve)
    p_bt = sub.add_parser("var-backtest", help="reference VaR backtests on the S&P 500 and the synthetic index")
    p_bt.add_argument("--series", nargs="+", default=["SPX", "SYNX"], choices=["SPX", "SYNX"])
    p_bt.add_argument("--scenarios", type=int, default=10_000, help="Monte Carlo scenarios per day")
    p_bt.set_defaults(func=var_backtest)
    p_eval = sub.add_parser(
        "vol-forecast-eval", help="out-of-sample loss of every vol model on real and synthetic data"
    )
    p_eval.add_argument("--min-train", type=int, default=504)
    p_eval.add_argument("--refit-every", type=int, default=21)
    p_eval.set_defaults(func=vol_forecast_eval)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
