"""Dagster resources: all I/O lives here (warehouse, market data source)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from risk_pipeline.alerts import AlertsConfig
from risk_pipeline.alerts import load_config as load_alerts_config
from risk_pipeline.paths import (
    ALERTS_FILE,
    DEFAULT_EXPORTS_DIR,
    DEFAULT_WAREHOUSE_PATH,
    MACRO_EVENTS_FILE,
    PROJECT_ROOT,
    SAMPLE_FOLDER,
)
from risk_pipeline.quality import QualitySettings
from risk_pipeline.sources.base import MarketDataSource
from risk_pipeline.warehouse import Warehouse, WriterLock


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse: a DuckDB file path (embedded default) or a ``postgresql://`` URL (schema ``risk``).

    On DuckDB a run takes the file's writer lock before its first write and keeps it to its end, so
    runs that write the same file never interleave (a second run waits up to ``writer_lock_timeout_seconds``,
    then fails naming the run it waited for). PostgreSQL needs no such lock.
    """

    url: str = str(DEFAULT_WAREHOUSE_PATH)
    writer_lock_timeout_seconds: float = 1800.0
    _warehouse: Warehouse | None = PrivateAttr(default=None)
    _owner: str = PrivateAttr(default="")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._owner = context.run.run_id if context.run is not None else "no run"

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._warehouse is not None:
            self._warehouse.release_writer()

    def get(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = self._open()
            if self._warehouse.engine == "duckdb" and self.url != ":memory:":
                self._warehouse.writer_lock = WriterLock(
                    self.url, self._owner or "no run", self.writer_lock_timeout_seconds
                )
                self._warehouse.hold_open_while_writing = True
            self._warehouse.ensure_tables()
        return self._warehouse

    def _open(self) -> Warehouse:
        return Warehouse(self.url)


class MarketDataResource(dg.ConfigurableResource):
    """Chooses the market data source and holds the data-quality thresholds."""

    kind: Literal["synthetic", "folder", "packaged"] = "synthetic"
    seed: int = 7
    n_underlyings: int = 50
    #: Synthetic universe size: sample (``n_underlyings`` stocks and the sample book), medium (500 stocks, a book
    #: of about 5,000 positions) or large (3,000 stocks, about 50,000 positions); ``RISK_PIPELINE_UNIVERSE``.
    universe: Literal["sample", "medium", "large"] = "sample"
    #: Synthetic market regime: calm, realistic (crisis episodes, long-memory vol) or crisis.
    market: Literal["calm", "realistic", "crisis"] = "realistic"
    folder: str = str(SAMPLE_FOLDER)
    dataset: str = "sp500"
    macro_events_file: str = str(MACRO_EVENTS_FILE)
    #: More market-wide event files (payrolls, PPI, GDP, option expiration, Fed speeches, ...): every ``*.csv`` of
    #: this folder besides ``macro_events_file`` ("" for none). Only ``macro_events_file`` moves the synthetic market.
    event_files_dir: str = str(MACRO_EVENTS_FILE.parent)
    max_abs_daily_log_return: float = 0.40
    snapshot_max_age_minutes: float = 30.0
    #: a session of a range run without any input: "fail" blocks the run, "keep" leaves its rows as stored
    missing_session_policy: Literal["fail", "keep"] = "fail"
    #: |ln(underlying_price / close)| allowed for a snapshot in the session's last window before the close
    underlying_close_tolerance: float = 0.05
    underlying_close_window_minutes: float = 60.0

    _source: MarketDataSource | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """At the start of a ``price_history_job`` run (or a run of some of its assets with ``atm_vol_history``)
        with its steps in this process, start compiling the history's numba kernels in a separate process
        (``kernel_warmup``; nothing if they are cached already), so a first run's compilation overlaps the steps
        before ``atm_vol_history``."""
        from risk_pipeline.defs.automation.jobs import PRICE_HISTORY_ASSETS, price_history_job

        run = context.run
        if run is None or os.environ.get("RISK_PIPELINE_EXECUTOR", "in_process") == "multiprocess":
            return
        selection = {key.to_user_string() for key in run.asset_selection or ()}
        history = run.job_name == price_history_job.name and not selection
        if history or ("atm_vol_history" in selection and selection <= set(PRICE_HISTORY_ASSETS)):
            from risk_pipeline.kernel_warmup import HISTORY_WARMUP

            HISTORY_WARMUP.start()

    def get_source(self) -> MarketDataSource:
        """The configured source, built once per resource instance."""
        if self._source is None:
            self._source = self._build_source()
        return self._source

    def _build_source(self) -> MarketDataSource:
        if self.kind == "synthetic":
            from risk_pipeline.sources.synthetic import SyntheticSource

            # {New York date: event type}, so the price history flags those days 'fomc' / 'cpi' (a plain list of
            # dates would flag them 'macro' and the event-risk layer would find no FOMC or CPI day); cancelled
            # releases did not happen and move nothing
            macro = _read_events(Path(self.macro_events_file))
            macro = macro[~macro["notes"].fillna("").str.contains("cancelled")]
            kinds: dict[dt.date, str] = {}
            for t, kind in zip(pd.to_datetime(macro["event_time"], utc=True), macro["event_type"], strict=True):
                day = t.tz_convert("America/New_York").date()
                kinds[day] = f"{kinds[day]};{kind}" if day in kinds else str(kind)
            from risk_pipeline.sources.synthetic import UNIVERSES

            n_underlyings, book_positions = UNIVERSES[self.universe]
            return SyntheticSource(
                seed=self.seed,
                n_underlyings=self.n_underlyings if self.universe == "sample" else n_underlyings,
                macro_event_dates=kinds,
                market=self.market,
                book_positions=book_positions,
            )
        if self.kind == "folder":
            from risk_pipeline.sources.folder import FolderSource

            return FolderSource(self.folder)
        from risk_pipeline.sources.packaged import PackagedHistorySource

        return PackagedHistorySource(self.dataset)

    def macro_events(self) -> pd.DataFrame:
        """Market-wide events shipped under data/: ``macro_events_file`` (FOMC, CPI) and every other ``*.csv`` of
        ``event_files_dir`` (event_calendar columns, text as read, with file and row)."""
        first = Path(self.macro_events_file)
        more = sorted(Path(self.event_files_dir).glob("*.csv")) if self.event_files_dir else []
        paths = [first, *(p for p in more if p.resolve() != first.resolve())]
        return pd.concat([_read_events(p) for p in paths], ignore_index=True)

    @property
    def quality(self) -> QualitySettings:
        return QualitySettings(
            max_abs_daily_log_return=self.max_abs_daily_log_return,
            snapshot_max_age_minutes=self.snapshot_max_age_minutes,
            missing_session_policy=self.missing_session_policy,
            underlying_close_tolerance=self.underlying_close_tolerance,
            underlying_close_window_minutes=self.underlying_close_window_minutes,
        )


def _read_events(path: Path) -> pd.DataFrame:
    """One event file (event_calendar columns, text as read) with ``source_file`` and ``source_row``."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    frame = frame.astype(object).where(frame.notna(), None)
    rel = path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)
    frame["source_file"] = rel
    frame["source_row"] = range(1, len(frame) + 1)
    return frame


class ExportsResource(dg.ConfigurableResource):
    """Folder for documents written for downstream tools (JSON per book), default ``exports/``."""

    root: str = str(DEFAULT_EXPORTS_DIR)

    def write_json(self, relative: str, document: object) -> Path:
        """Write atomically (temp file, then rename) so readers never see half a document."""
        import json

        path = Path(self.root) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write a binary file (a PNG plot) atomically under the root; returns its absolute path."""
        path = (Path(self.root) / relative).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path


class AlertsResource(dg.ConfigurableResource):
    """Alert channels and rules (``data/alerts.yaml``, see ``risk_pipeline.alerts``).

    Holds no secret: a channel names the environment variables of its webhook URL or SMTP host and
    password, read when an alert is sent (a channel whose variables are unset is skipped).
    """

    config_file: str = str(ALERTS_FILE)

    def config(self) -> AlertsConfig:
        return load_alerts_config(self.config_file)


def alerts_resource_from_env() -> AlertsResource:
    """The alert channels of ``RISK_PIPELINE_ALERTS_FILE`` (default ``data/alerts.yaml``).

    Used by the alerts asset (unless its ``alerts_file`` config names another file) and the run-failure
    sensor; not a required resource, so code that builds its own resources needs no alert configuration.
    """
    return AlertsResource(config_file=os.environ.get("RISK_PIPELINE_ALERTS_FILE", str(ALERTS_FILE)))


def _setting(variable: str, default: str) -> str | dg.EnvVar:
    """``dg.EnvVar(variable)`` when the variable is set, else the default.

    With ``EnvVar`` Dagster resolves the value when the resource is built and shows only the variable's
    name in the UI, the run config and the event log: a password in a URL never appears there.
    """
    return dg.EnvVar(variable) if os.environ.get(variable) else default


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """Resources for this environment, every setting from an environment variable (all optional; source,
    seed and folders are not secret and are shown in the UI as values, the warehouse URL only by name).

    ``RISK_PIPELINE_WAREHOUSE_URL``: a ``postgresql://`` URL (production) or a DuckDB path; default
    ``warehouse/risk_warehouse.duckdb`` in the project. ``RISK_PIPELINE_SOURCE``: synthetic (default),
    folder or packaged; ``RISK_PIPELINE_FOLDER``, ``RISK_PIPELINE_SEED``, ``RISK_PIPELINE_MARKET`` and
    ``RISK_PIPELINE_UNIVERSE`` (sample | medium | large: synthetic names and book size) configure them;
    ``RISK_PIPELINE_EXPORTS`` is the folder of the JSON documents.
    """
    market = MarketDataResource(
        kind=os.environ.get("RISK_PIPELINE_SOURCE", "synthetic"),  # type: ignore[arg-type]
        seed=int(os.environ.get("RISK_PIPELINE_SEED", "7")),
        market=os.environ.get("RISK_PIPELINE_MARKET", "realistic"),  # type: ignore[arg-type]
        universe=os.environ.get("RISK_PIPELINE_UNIVERSE", "sample"),  # type: ignore[arg-type]
        folder=os.environ.get("RISK_PIPELINE_FOLDER", str(SAMPLE_FOLDER)),
    )
    # the URL may carry a password: passed as EnvVar, so only the variable's name is ever shown
    warehouse = WarehouseResource(url=_setting("RISK_PIPELINE_WAREHOUSE_URL", str(DEFAULT_WAREHOUSE_PATH)))
    exports = ExportsResource(root=os.environ.get("RISK_PIPELINE_EXPORTS", str(DEFAULT_EXPORTS_DIR)))
    return {"warehouse": warehouse, "market_data": market, "exports": exports}


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
