"""smile_history through the folder source: exported, read back, validated; a bad row is named by file and row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from risk_pipeline.quality import ValidationContext, validate
from risk_pipeline.sources.export import export_folder
from risk_pipeline.sources.folder import FolderSource
from risk_pipeline.sources.synthetic import SyntheticSource

DAYS = (dt.date(2026, 11, 19), dt.date(2026, 11, 20))


def test_smile_history_round_trips_and_a_bad_vol_is_quarantined(tmp_path: Path) -> None:
    src = SyntheticSource(seed=7, n_underlyings=4)
    export_folder(src, tmp_path, DAYS)
    folder = FolderSource(tmp_path)
    raw = folder.smile_history(DAYS[0], DAYS[-1])
    ctx = ValidationContext("2026-11-19...2026-11-20", DAYS)
    report = validate("smile_history", raw, ctx)
    assert report.passed, report.message()
    want = src.smile_history(DAYS[0], DAYS[-1])
    got = report.typed.sort_values(["as_of_date", "symbol", "tenor_days"]).reset_index(drop=True)
    want = want.sort_values(["as_of_date", "symbol", "tenor_days"]).reset_index(drop=True)
    pd.testing.assert_series_equal(got["atm_vol"], want["atm_vol"], check_exact=False, rtol=1e-12)
    # a vol of -0.2 in the second file's third data row
    path = tmp_path / "smile_history" / "2026-11-20.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[2, "put_25d_vol"] = "-0.2"
    frame.to_csv(path, index=False)
    report = validate("smile_history", folder.smile_history(DAYS[0], DAYS[-1]), ctx)
    assert [r.rule for r in report.failed] == ["put_25d_vol_plausible"]
    assert "smile_history/2026-11-20.csv" in report.message() and "row 3" in report.message()
    assert len(report.quarantine_frame("smile_history")) == 1
    # a session without a file is allowed (the backtest leaves it out)
    path.unlink()
    assert validate("smile_history", folder.smile_history(DAYS[0], DAYS[-1]), ctx).passed
