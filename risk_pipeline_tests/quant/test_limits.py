"""Limits file validation and limit evaluation on hand-built books.

Expected values are computed by hand in the comments (or with plain numpy on the inputs), never
copied from this module's output.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from risk_pipeline.quant.limits import (
    BREACH,
    LIMIT_NAMES,
    NOT_AVAILABLE,
    OK,
    WARN,
    BookExposure,
    LimitsConfig,
    LimitsConfigError,
    evaluate_limits,
    load_limits,
    results_by_name,
    unheld_hedge_strategies,
)

LIMITS_FILE = Path(__file__).resolve().parents[2] / "data" / "limits" / "limits.yaml"

#: Config with only the limits a test sets (everything else disabled).
NONE = {name: None for name in LIMIT_NAMES if name != "max_drawdown_pct"}


def cfg(**kwargs: object) -> LimitsConfig:
    return LimitsConfig(**{**NONE, **kwargs})  # type: ignore[arg-type]


def stocks(
    quantity: list[float],
    spot: list[float],
    symbol: list[str] | None = None,
    sector: list[str] | None = None,
    **book: object,
) -> BookExposure:
    """A book of stocks (delta 1, no option greeks)."""
    n = len(quantity)
    kwargs: dict[str, object] = {"nav": 1e6, "peak_nav": 1e6, "daily_pnl": 0.0}
    kwargs.update(book)
    return BookExposure(
        position_id=[f"p{i}" for i in range(n)],
        symbol=symbol or [f"S{i}" for i in range(n)],
        sector=sector or [f"sec{i}" for i in range(n)],
        quantity=quantity,
        multiplier=np.ones(n),
        spot=spot,
        unit_price=spot,
        delta=np.ones(n),
        gamma=np.zeros(n),
        vega=np.zeros(n),
        theta_per_day=np.zeros(n),
        **kwargs,  # type: ignore[arg-type]
    )


# ---- the limits file ----------------------------------------------------------------------------


def test_shipped_limits_file_loads_with_both_books() -> None:
    f = load_limits(LIMITS_FILE)
    assert f.version
    assert set(f.book_names) == {"core_equity", "vol_overlay"}
    core, vol = f.for_book("core_equity"), f.for_book("vol_overlay")
    # the brief's defaults; core_equity's mandate allows 30 names and holds an index hedge
    assert (f.defaults.min_positions, f.defaults.max_positions) == (3, 20)
    assert f.defaults.max_pairwise_correlation == 0.70
    assert (core.max_positions, core.max_pairwise_correlation) == (30, 0.92)
    for c in (f.defaults, core):
        assert c.max_position_pct_gross == 0.20
        assert c.max_underlying_pct_gross == 0.20
        assert c.max_daily_loss_pct_nav == 0.02
        assert c.max_drawdown_pct == 0.10
        assert c.warning_fraction == 0.8
        assert c.light_drawdown_pct < c.moderate_drawdown_pct < c.max_drawdown_pct
    # overrides apply, the rest is inherited
    assert core.max_abs_net_dollar_delta != f.defaults.max_abs_net_dollar_delta
    assert vol.max_abs_vega_per_vol_point != f.defaults.max_abs_vega_per_vol_point
    assert vol.max_positions == f.defaults.max_positions
    assert core.version == f.version and core.source == str(LIMITS_FILE)
    # every limit is configured in the shipped file (none disabled by accident)
    for c in (core, vol):
        assert all(c.threshold(name) is not None for name in LIMIT_NAMES)
    # a book without a section gets the defaults under its own name
    other = f.for_book("new_book")
    assert other.book == "new_book" and other.max_abs_net_dollar_delta == f.defaults.max_abs_net_dollar_delta


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _defaults_yaml(**override: object) -> str:
    values = {
        **{name: 1000 for name in LIMIT_NAMES},
        "max_position_pct_gross": 0.2,
        "max_underlying_pct_gross": 0.2,
        "max_sector_pct_gross": 0.4,
        "min_positions": 3,
        "max_positions": 20,
        "max_pairwise_correlation": 0.7,
        "max_daily_loss_pct_nav": 0.02,
        "max_drawdown_pct": 0.1,
    }
    values.update(override)
    return "\n".join(f"  {k}: {'null' if v is None else v}" for k, v in values.items())


def test_validation_reports_every_problem_with_file_book_field_value_rule(tmp_path: Path) -> None:
    text = f"""
version: 7
defaults:
{_defaults_yaml(max_abs_net_dollar_delta=-5, warning_fraction=1.5)}
  max_postion_pct_gross: 0.3
books:
  core_equity:
    max_abs_vega_per_vol_point: -1
    min_positions: 2.5
  vol_overlay:
    warning_fractions:
      max_abs_gamma_shares: 0
      not_a_limit: 0.5
"""
    path = _write(tmp_path, text)
    with pytest.raises(LimitsConfigError) as info:
        load_limits(path)
    problems = {(p.book, p.field): p for p in info.value.problems}
    assert all(p.file == str(path) for p in info.value.problems)
    assert problems[("defaults", "max_abs_net_dollar_delta")].value == -5
    assert "> 0" in problems[("defaults", "max_abs_net_dollar_delta")].rule
    assert "(0, 1)" in problems[("defaults", "warning_fraction")].rule
    typo = problems[("defaults", "max_postion_pct_gross")]
    assert "unknown field" in typo.rule and "max_position_pct_gross" in typo.rule
    assert problems[("core_equity", "max_abs_vega_per_vol_point")].value == -1
    assert "integer" in problems[("core_equity", "min_positions")].rule
    assert ("vol_overlay", "warning_fractions.max_abs_gamma_shares") in problems
    assert "unknown limit" in problems[("vol_overlay", "warning_fractions.not_a_limit")].rule
    assert len(info.value.problems) == 7
    message = str(info.value)
    assert str(path) in message and "'core_equity'" in message and "max_abs_vega_per_vol_point" in message


def test_validation_of_structure_levels_and_required_fields(tmp_path: Path) -> None:
    defaults = _defaults_yaml(
        max_var_99_1d=None, light_drawdown_pct=0.08, moderate_drawdown_pct=0.075, max_drawdown_pct=None
    )
    text = f"""
owner: risk
defaults:
{defaults}
books:
  core_equity:
    min_positions: 30
"""
    text = text.replace("  max_es_975_1d: 1000\n", "")
    with pytest.raises(LimitsConfigError) as info:
        load_limits(_write(tmp_path, text))
    found = {(p.book, p.field, p.rule.split(":")[0]) for p in info.value.problems}
    fields = {(p.book, p.field) for p in info.value.problems}
    assert ("-", "owner") in fields  # unknown top-level key
    assert ("-", "version") in fields  # missing version
    assert ("defaults", "max_es_975_1d") in fields  # every limit must be listed in defaults
    assert ("defaults", "max_drawdown_pct") in fields  # the one limit that cannot be null
    assert ("defaults", "max_var_99_1d") not in fields  # null disables a limit
    assert any(f == ("defaults", "max_drawdown_pct", "must not be null") for f in found)


def test_cross_field_rules_per_book_and_dict_source() -> None:
    base = {
        "version": "v1",
        "defaults": {name: None for name in LIMIT_NAMES} | {"max_drawdown_pct": 0.1},
        "books": {"b": {"light_drawdown_pct": 0.08, "moderate_drawdown_pct": 0.06}},
    }
    with pytest.raises(LimitsConfigError) as info:
        load_limits(base)
    (problem,) = info.value.problems
    assert problem.file == "<dict>" and problem.book == "b" and "light_drawdown_pct <" in problem.rule
    base["books"] = {"b": {"min_positions": 5}}
    f = load_limits(base)
    assert f.for_book("b").min_positions == 5 and f.defaults.max_abs_net_dollar_delta is None


def test_hedge_strategies_must_be_known_and_should_be_held() -> None:
    base = {"version": "v1", "defaults": {name: None for name in LIMIT_NAMES} | {"max_drawdown_pct": 0.1}}
    base["defaults"]["hedge_strategies"] = ["hedge", "index_hedge"]
    with pytest.raises(LimitsConfigError) as info:
        load_limits(base)
    (problem,) = info.value.problems
    assert problem.field == "hedge_strategies" and problem.value == "hedge" and "not a known strategy" in problem.rule
    base["defaults"]["hedge_strategies"] = ["index_hedge", "protective_put"]
    config = load_limits(base).defaults
    held = ["long_stock", "protective_put", "short_stock"]
    assert unheld_hedge_strategies(config, held) == ["index_hedge"]


def test_shipped_hedge_strategies_are_held_by_the_sample_books() -> None:
    """The shipped file keeps the sample books' hedges (index puts, protective puts) at maximum preservation."""
    limits = load_limits(LIMITS_FILE)
    assert set(limits.for_book("core_equity").hedge_strategies) == {"index_hedge", "protective_put"}
    from risk_pipeline.sources.synthetic import SyntheticSource

    positions = SyntheticSource(seed=7, n_underlyings=50).positions(dt.date(2026, 11, 20))
    held = set(positions.loc[positions["book"] == "core_equity", "strategy"])
    assert unheld_hedge_strategies(limits.for_book("core_equity"), held) == []


def test_direct_config_is_validated_and_warning_levels() -> None:
    with pytest.raises(LimitsConfigError, match="max_abs_net_dollar_delta"):
        LimitsConfig(max_abs_net_dollar_delta=-1.0)
    c = LimitsConfig(max_abs_net_dollar_delta=1000.0, warning_fractions={"max_position_pct_gross": 0.5})
    assert c.warn_threshold("max_abs_net_dollar_delta") == pytest.approx(800.0)
    assert c.warn_threshold("max_position_pct_gross") == pytest.approx(0.10)  # override 0.5 * 0.20
    assert c.warn_threshold("min_positions") == pytest.approx(3 / 0.8)  # a floor warns above it
    assert c.threshold("max_abs_vega_per_vol_point") is None


# ---- exposures ----------------------------------------------------------------------------------


def test_position_exposures_of_one_option_by_hand() -> None:
    e = BookExposure(
        position_id=["o1"],
        symbol=["XYZ"],
        sector=["tech"],
        quantity=[10],
        multiplier=[100],
        spot=[200.0],
        unit_price=[4.0],
        delta=[0.5],
        gamma=[0.01],
        vega=[0.3],
        theta_per_day=[-0.05],
        is_option=[True],
        nav=1e6,
        peak_nav=1e6,
        daily_pnl=0.0,
    )
    assert e.delta_shares[0] == 500.0  # 10 * 100 * 0.5
    assert e.dollar_delta[0] == 100_000.0  # 500 * 200
    assert e.gamma_shares[0] == pytest.approx(10.0)  # 10 * 100 * 0.01
    assert e.vega_per_vol_point[0] == pytest.approx(3.0)  # 10 * 100 * 0.3 / 100
    assert e.position_theta_per_day[0] == pytest.approx(-50.0)
    assert e.market_value[0] == 4000.0
    assert e.gross_exposure == 100_000.0  # delta-adjusted notional


def test_book_inputs_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="entries"):
        stocks([1, 2], [10.0])
    with pytest.raises(ValueError, match="unique"):
        BookExposure(
            position_id=["a", "a"],
            symbol=["A", "B"],
            sector=["s", "s"],
            quantity=[1, 1],
            multiplier=[1, 1],
            spot=[1, 1],
            unit_price=[1, 1],
            delta=[1, 1],
            gamma=[0, 0],
            vega=[0, 0],
            theta_per_day=[0, 0],
            nav=1.0,
            peak_nav=1.0,
            daily_pnl=0.0,
        )


# ---- evaluation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "status"),
    [(7.99, OK), (8.0, OK), (8.01, WARN), (10.0, WARN), (10.01, BREACH)],
)
def test_status_boundaries_exactly_at_warning_and_cap(quantity: float, status: str) -> None:
    # dollar delta = quantity * 100; cap 1000, warning 800: a limit allows its own value
    r = results_by_name(evaluate_limits(stocks([quantity], [100.0]), cfg(max_abs_net_dollar_delta=1000.0)))[
        "max_abs_net_dollar_delta"
    ]
    assert r.value == pytest.approx(quantity * 100.0)
    assert r.threshold == 1000.0 and r.warn_threshold == pytest.approx(800.0)
    assert r.utilization == pytest.approx(quantity * 100.0 / 1000.0)
    assert r.status == status


@pytest.mark.parametrize(("names", "status", "util"), [(4, OK, 0.75), (3, WARN, 1.0), (2, BREACH, 1.5)])
def test_min_positions_is_a_floor_on_distinct_underlyings(names: int, status: str, util: float) -> None:
    # two positions on S0 count once; a zero quantity does not count
    symbols = ["S0", *[f"S{i}" for i in range(names)], "ZZ"]
    e = stocks([1.0] * (names + 1) + [0.0], [10.0] * (names + 2), symbol=symbols)
    rows = results_by_name(evaluate_limits(e, cfg(min_positions=3, max_positions=20)))
    assert rows["min_positions"].value == names
    assert rows["min_positions"].status == status
    assert rows["min_positions"].utilization == pytest.approx(util)  # 3 / names
    assert rows["max_positions"].utilization == pytest.approx(names / 20)


def test_empty_book_breaches_the_floor_with_infinite_utilization() -> None:
    r = results_by_name(evaluate_limits(stocks([0.0], [10.0]), cfg(min_positions=3)))["min_positions"]
    assert r.value == 0 and r.utilization == math.inf and r.status == BREACH


def test_concentration_values_and_drivers() -> None:
    # gross: p0 250 + p1 150 on A (400), B, C, D, E 150 each -> 1000
    e = stocks(
        [25.0, 15.0, 15.0, 15.0, 15.0, 15.0],
        [10.0] * 6,
        symbol=["A", "A", "B", "C", "D", "E"],
        sector=["tech", "tech", "tech", "fin", "fin", "energy"],
    )
    rows = results_by_name(
        evaluate_limits(e, cfg(max_position_pct_gross=0.2, max_underlying_pct_gross=0.2, max_sector_pct_gross=0.4))
    )
    pos, und, sec = (
        rows["max_position_pct_gross"],
        rows["max_underlying_pct_gross"],
        rows["max_sector_pct_gross"],
    )
    assert pos.value == pytest.approx(0.25) and pos.status == BREACH and pos.drivers == ("p0",)
    assert und.value == pytest.approx(0.40) and und.status == BREACH and und.drivers == ("A",)
    # tech = 400 + 150 = 0.55 > 0.4; fin 0.30 is under the 0.32 warning level
    assert sec.value == pytest.approx(0.55) and sec.drivers == ("tech",)
    assert sec.scope == "sector"


def test_concentration_floor_uses_a_share_of_nav() -> None:
    # gross 1000 but the denominator is max(1000, 0.5 * 10000) = 5000
    e = stocks([50.0, 50.0], [10.0, 10.0], nav=10_000.0, peak_nav=10_000.0)
    rows = results_by_name(evaluate_limits(e, cfg(max_position_pct_gross=0.2, concentration_min_gross_pct_nav=0.5)))
    assert rows["max_position_pct_gross"].value == pytest.approx(500.0 / 5000.0)


def test_net_delta_shares_are_per_underlying_and_dollar_delta_per_book() -> None:
    # +100 shares of A at 10, -100 shares of B at 30, +50 shares of A at 10
    e = stocks([100.0, -100.0, 50.0], [10.0, 30.0, 10.0], symbol=["A", "B", "A"])
    rows = results_by_name(evaluate_limits(e, cfg(max_abs_net_delta_shares=1000.0, max_abs_net_dollar_delta=1e6)))
    assert rows["max_abs_net_delta_shares"].value == 150.0  # A: 150 shares, B: 100
    assert rows["max_abs_net_delta_shares"].drivers == ("A",)
    assert rows["max_abs_net_dollar_delta"].value == pytest.approx(abs(1500.0 - 3000.0))


def test_option_greeks_theta_loss_and_losses() -> None:
    n = 3
    e = BookExposure(
        position_id=["c1", "p1", "s1"],
        symbol=["X", "X", "Y"],
        sector=["a", "a", "b"],
        quantity=[10, -4, 100],
        multiplier=[100, 100, 1],
        spot=[50.0, 50.0, 20.0],
        unit_price=[2.0, 1.5, 20.0],
        delta=[0.6, -0.3, 1.0],
        gamma=[0.04, 0.05, 0.0],
        vega=[0.1, 0.12, 0.0],
        theta_per_day=[-0.02, -0.015, 0.0],
        is_option=[True, True, False],
        nav=960_000.0,
        peak_nav=1_000_000.0,
        daily_pnl=-10_000.0,
    )
    assert e.n == n
    rows = results_by_name(
        evaluate_limits(
            e,
            cfg(
                max_abs_gamma_shares=100.0,
                max_abs_vega_per_vol_point=100.0,
                max_theta_per_day_loss=100.0,
                max_daily_loss_pct_nav=0.02,
            ),
        )
    )
    # gamma X: 10*100*0.04 + (-4)*100*0.05 = 40 - 20 = 20
    assert rows["max_abs_gamma_shares"].value == pytest.approx(20.0)
    # vega: (1000*0.1 - 400*0.12) / 100 = (100 - 48) / 100 = 0.52
    assert rows["max_abs_vega_per_vol_point"].value == pytest.approx(0.52)
    # theta loss: -(1000*-0.02 + -400*-0.015) = -(-20 + 6) = 14, driven by the long call
    assert rows["max_theta_per_day_loss"].value == pytest.approx(14.0)
    assert rows["max_theta_per_day_loss"].drivers == ("c1",)
    # daily loss vs start-of-day NAV 970,000; drawdown 1 - 0.96
    assert rows["max_daily_loss_pct_nav"].value == pytest.approx(10_000 / 970_000)
    assert rows["max_drawdown_pct"].value == pytest.approx(0.04)


def test_var_and_es_are_not_available_when_not_produced() -> None:
    c = cfg(max_var_99_1d=100.0, max_es_975_1d=100.0)
    rows = results_by_name(evaluate_limits(stocks([1.0], [10.0]), c))
    for name in ("max_var_99_1d", "max_es_975_1d"):
        assert rows[name].status == NOT_AVAILABLE
        assert math.isnan(rows[name].value) and math.isnan(rows[name].utilization)
        assert "None" in rows[name].note
    rows = results_by_name(evaluate_limits(stocks([1.0], [10.0], var_99_1d=85.0, es_975_1d=120.0), c))
    assert rows["max_var_99_1d"].status == WARN and rows["max_es_975_1d"].status == BREACH


def test_pairwise_correlation_over_held_underlyings_only() -> None:
    symbols = ("A", "B", "C", "D")
    corr = np.array(
        [
            [1.0, 0.5, 0.2, 0.95],
            [0.5, 1.0, 0.65, 0.95],
            [0.2, 0.65, 1.0, 0.95],
            [0.95, 0.95, 0.95, 1.0],
        ]
    )
    # D is in the matrix but its position is flat: its 0.95 pairs do not count
    e = stocks([1.0, 1.0, 1.0, 0.0], [10.0] * 4, symbol=list(symbols), correlation=corr, correlation_symbols=symbols)
    r = results_by_name(evaluate_limits(e, cfg(max_pairwise_correlation=0.7)))["max_pairwise_correlation"]
    assert r.value == pytest.approx(0.65) and r.drivers == ("B/C",) and r.status == WARN
    missing = stocks([1.0, 1.0], [10.0] * 2, symbol=["A", "Q"], correlation=corr, correlation_symbols=symbols)
    r = results_by_name(evaluate_limits(missing, cfg(max_pairwise_correlation=0.7)))["max_pairwise_correlation"]
    assert r.status == NOT_AVAILABLE and "Q" in r.note
    no_matrix = results_by_name(evaluate_limits(stocks([1.0, 1.0], [1.0, 1.0]), cfg(max_pairwise_correlation=0.7)))
    assert no_matrix["max_pairwise_correlation"].status == NOT_AVAILABLE


def test_nan_inputs_are_not_available_and_name_the_position() -> None:
    e = stocks([10.0, 5.0], [100.0, math.nan])
    rows = results_by_name(
        evaluate_limits(e, cfg(max_abs_net_dollar_delta=1e6, max_abs_net_delta_shares=1e6, max_position_pct_gross=0.5))
    )
    assert rows["max_abs_net_dollar_delta"].status == NOT_AVAILABLE
    assert "p1" in rows["max_abs_net_dollar_delta"].note
    assert rows["max_position_pct_gross"].status == NOT_AVAILABLE
    assert rows["max_abs_net_delta_shares"].status == OK  # shares need no spot
    bad_nav = results_by_name(evaluate_limits(stocks([1.0], [1.0], nav=math.nan), cfg()))
    assert bad_nav["max_drawdown_pct"].status == NOT_AVAILABLE


def test_rows_follow_the_limit_order_and_disabled_limits_are_omitted() -> None:
    rows = evaluate_limits(stocks([1.0], [1.0]), LimitsConfig(max_abs_net_dollar_delta=10.0))
    names = [r.limit_name for r in rows]
    assert names == [n for n in LIMIT_NAMES if n in names]
    assert "max_abs_vega_per_vol_point" not in names and "max_drawdown_pct" in names
