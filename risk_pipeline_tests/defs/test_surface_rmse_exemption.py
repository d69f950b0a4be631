"""fit_rmse_within_bound: two-quote slices within a week of expiry are reported, not held to the bound."""

import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.defs.volatility.surfaces import surface_checks


def _surface(n_quotes: list[int], days: list[float], rmse: list[float]) -> pd.DataFrame:
    """vol_surface rows: every contract column filled (arbitrage-free, finite), the three under test given."""
    n = len(rmse)
    cols = {c.name: c.type for c in table("vol_surface").columns}
    frame = pd.DataFrame({name: [True] * n if kind == "boolean" else [0.1] * n for name, kind in cols.items()})
    frame["underlying"] = [f"U{i}" for i in range(n)]
    frame["expiry"] = ["2026-12-04"] * n
    frame["n_quotes"] = n_quotes
    frame["time_to_expiry_years"] = [d / 365.0 for d in days]
    frame["rmse_vol_points"] = rmse
    return frame


def _rmse_check(surface: pd.DataFrame) -> object:
    grid = pd.DataFrame({"implied_vol": [0.2]})
    return next(c for c in surface_checks(surface, grid, 2.0) if c.check_name == "fit_rmse_within_bound")


def test_two_quote_weekly_is_exempt_but_listed() -> None:
    check = _rmse_check(_surface([2, 12], [1.0, 30.0], [2.9, 0.4]))
    assert check.passed
    assert "U0" in check.metadata["slices_over_bound_exempt"].value


def test_three_quotes_or_a_longer_expiry_are_held_to_the_bound() -> None:
    assert not _rmse_check(_surface([3], [1.0], [2.9])).passed
    assert not _rmse_check(_surface([2], [8.0], [2.9])).passed
