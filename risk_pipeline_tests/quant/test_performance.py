"""quant/performance.py against series evaluated by hand (formulas written out with numpy in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from risk_pipeline.quant import performance as perf

R = np.array([0.01, -0.02, 0.015, 0.003, -0.007, 0.02, -0.01])


def test_returns_ratios_match_their_formulas() -> None:
    m = perf.returns_metrics(R)
    n, ann = R.size, 252
    cum = np.prod(1 + R) - 1
    assert m.n_obs == n
    assert m.cumulative_return == pytest.approx(cum, rel=1e-12)
    assert m.annual_return == pytest.approx((1 + cum) ** (ann / n) - 1, rel=1e-12)
    sd = math.sqrt(sum((x - R.mean()) ** 2 for x in R) / (n - 1))
    assert m.annual_volatility == pytest.approx(sd * math.sqrt(ann), rel=1e-12)
    assert m.sharpe_ratio == pytest.approx(R.mean() / sd * math.sqrt(ann), rel=1e-12)
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in R) / n) * math.sqrt(ann)
    assert m.sortino_ratio == pytest.approx(R.mean() * ann / downside, rel=1e-12)
    # wealth 1.01, 0.9898, 1.0046..., the trough after -2 % from the 1.01 peak: 2 %; then -0.7 % and -1 % dips
    w = np.cumprod(1 + R)
    peak = np.maximum.accumulate(np.r_[1.0, w])[1:]
    assert m.max_drawdown == pytest.approx(max(1 - w / peak), rel=1e-12)
    assert m.max_drawdown == pytest.approx(0.02, rel=1e-12)
    assert m.calmar_ratio == pytest.approx(m.annual_return / 0.02, rel=1e-12)
    # under water: session 2 (0.9898 < 1.01), session 3 (1.00465 < 1.01), session 4 recovers (1.00767 < 1.01!)
    under = (1 - w / peak) > 1e-15
    longest = max(len(s) for s in "".join("1" if u else "0" for u in under).split("0"))
    assert m.max_drawdown_duration_sessions == longest == 4
    assert m.hit_rate == pytest.approx(4 / 7)
    assert m.profit_factor == pytest.approx((0.01 + 0.015 + 0.003 + 0.02) / (0.02 + 0.007 + 0.01))
    assert m.average_win == pytest.approx((0.01 + 0.015 + 0.003 + 0.02) / 4)
    assert m.average_loss == pytest.approx(-(0.02 + 0.007 + 0.01) / 3)
    assert m.tail_ratio == pytest.approx(abs(np.percentile(R, 95)) / abs(np.percentile(R, 5)))


def test_degenerate_series_are_nan_not_infinite() -> None:
    empty = perf.returns_metrics([])
    assert empty.n_obs == 0 and math.isnan(empty.sharpe_ratio) and empty.max_drawdown_duration_sessions == 0
    gains = perf.returns_metrics([0.01, 0.02, 0.01])
    assert gains.max_drawdown == 0.0 and math.isnan(gains.calmar_ratio) and math.isnan(gains.profit_factor)
    assert math.isnan(gains.sortino_ratio)  # no downside: empyrical gives inf, reported as undefined
    one = perf.returns_metrics([0.01])
    assert math.isnan(one.sharpe_ratio) and one.cumulative_return == pytest.approx(0.01)
    flat = perf.returns_metrics([0.0, 0.0])
    assert math.isnan(flat.hit_rate) and flat.max_drawdown == 0.0


def test_drawdown_duration_counts_an_open_run_to_the_end() -> None:
    assert perf.max_drawdown_duration([0.01, -0.01, -0.01, -0.01]) == 3
    assert perf.max_drawdown_duration([-0.01, 0.02, -0.001]) == 1  # below 1.0 once; recovers; dips once more
    assert perf.max_drawdown_duration([0.01, 0.02]) == 0


def test_round_trips_with_average_cost_and_a_flip() -> None:
    # buy 100 @ 10, buy 100 @ 12 (entry 11), sell 150 @ 13, sell 100 @ 9 (closes 50, opens a 50 short), buy 50 @ 8
    rt = perf.round_trips([100, 100, -150, -100, 50], [10.0, 12.0, 13.0, 9.0, 8.0])
    assert rt.n == 2
    assert rt.side.tolist() == [1.0, -1.0]
    assert rt.quantity.tolist() == [200.0, 50.0]
    assert rt.entry_price[0] == pytest.approx(11.0)
    assert rt.exit_price[0] == pytest.approx((150 * 13 + 50 * 9) / 200)
    assert rt.pnl[0] == pytest.approx(150 * (13 - 11) + 50 * (9 - 11))
    assert (rt.entry_index.tolist(), rt.exit_index.tolist()) == ([0.0, 3.0], [3.0, 4.0])
    assert rt.entry_price[1] == 9.0 and rt.pnl[1] == pytest.approx(-50 * (8 - 9))
    assert perf.round_trips([10, 5], [1.0, 2.0]).n == 0  # still open


def test_excursions_and_trade_summary() -> None:
    # long from 100: highs reach 108, lows 97 -> MFE 8 %, MAE 3 %; short from 50: low 45, high 52 -> 10 %, 4 %
    assert perf.excursions(1, 100.0, [101, 108, 104], [99, 97, 100]) == pytest.approx((0.08, 0.03))
    assert perf.excursions(-1, 50.0, [51, 52], [48, 45]) == pytest.approx((0.10, 0.04))
    m = perf.trade_metrics([120.0, -30.0, 10.0], [3, 1, 5], [0.08, 0.10, np.nan], [0.03, 0.04, np.nan])
    assert (m.n_trades, m.win_rate, m.average_holding_sessions) == (3, pytest.approx(2 / 3), pytest.approx(3.0))
    assert (m.average_mfe, m.average_mae) == (pytest.approx(0.09), pytest.approx(0.035))


def test_stop_effectiveness_and_trailing_capture() -> None:
    # long stopped at 95, the close 5 sessions later at 90: 5/95 of loss avoided; short stopped at 40, later 38
    got = perf.stop_loss_avoided_pct([1, -1], [95.0, 40.0], [90.0, 38.0])
    assert got == pytest.approx([5 / 95, -2 / 40])
    # long entered at 100, best 120, trailing stop hit at 115: kept 15 of the 20 move; short 50 -> best 40, stop 44
    cap = perf.trailing_capture([1, -1, 1], [100.0, 50.0, 10.0], [120.0, 40.0, 10.0], [115.0, 44.0, 9.0])
    assert cap[:2] == pytest.approx([0.75, 0.6]) and math.isnan(cap[2])


def test_counterfactual_of_a_preservation_episode_on_a_scripted_static_book() -> None:
    """A book of 1,000 A and 500 B enters light preservation at session 0 and cuts A by half; prices move over
    the next 4 sessions. Without the control the static book keeps 1,000 A; with it 500 A."""
    a = np.array([50.0, 48.0, 45.0, 46.0, 44.0])
    b = np.array([20.0, 20.5, 21.0, 20.0, 20.5])
    without_mv = 1000 * a + 500 * b
    with_mv = 500 * a + 500 * b
    e = perf.control_effect(np.diff(with_mv), np.diff(without_mv), explicit_cost=0.0)
    # by hand: without = 1000 x (44 - 50) + 500 x (20.5 - 20) = -5,750; with = 500 x -6 + 250 = -2,750
    assert (e.n_sessions, e.pnl_without, e.pnl_with) == (4, pytest.approx(-5750.0), pytest.approx(-2750.0))
    assert e.difference == pytest.approx(3000.0) and e.pnl_given_up == 0.0
    # cumulative without: -1750, -4500, -4000, -5750 -> max drawdown 5,750; with: -750, -1750, -1500, -2750
    assert e.max_drawdown_without == pytest.approx(5750.0) and e.max_drawdown_with == pytest.approx(2750.0)
    assert e.drawdown_reduction == pytest.approx(3000.0)
    # a hedge: with it -100, +50 (sum -50); without -300, +400 (sum +100); it cost 25
    hedge = perf.control_effect([-100.0, 50.0], [-300.0, 400.0], explicit_cost=25.0)
    assert hedge.difference == pytest.approx(-150.0) and hedge.pnl_given_up == pytest.approx(150.0)
    assert hedge.net_benefit == pytest.approx(-175.0)
    # cumulative with: 0, -100, -50 (drawdown 100); without: 0, -300, 100 (drawdown 300)
    assert hedge.drawdown_reduction == pytest.approx(300.0 - 100.0)
    s = perf.summarize_controls([e, hedge, perf.control_effect([], [])])
    assert s.n_events == 2 and s.net_benefit == pytest.approx(3000.0 - 175.0)
    # both paid: the cut made money; the hedge cut the drawdown by 200, more than its 150 give-up plus 25 cost
    assert s.share_paid == pytest.approx(1.0)
    late = perf.control_effect([-100.0, 50.0], [-300.0, 400.0], explicit_cost=60.0)  # 200 < 150 + 60: not paid
    assert perf.summarize_controls([e, late]).share_paid == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same sessions"):
        perf.control_effect([1.0], [1.0, 2.0])


def test_path_excursions_of_option_trades_over_entry_mids_and_exit() -> None:
    """No high/low for an option: the path is entry, mids while held, exit; marks come unordered across trades."""
    side = [1, -1, 1, 1]
    entry = [2.00, 5.00, 1.00, 0.0]
    exit_ = [2.40, 4.00, 0.80, 1.0]
    # trade 0 (long from 2.00): mids 2.10, 1.70, 2.90 -> high 2.90, low 1.70: MFE 0.90 / 2, MAE 0.30 / 2
    # trade 1 (short from 5.00): mids 5.50, 3.50 -> favourable 5.00 - 3.50, adverse 5.50 - 5.00, over 5.00
    # trade 2 (long from 1.00, no mid): path 1.00, 0.80 -> MFE 0, MAE 0.20 (the exit fill is the low)
    # trade 3: entry 0 -> undefined; a NaN mark of trade 0 is ignored
    marks = [(1, 5.50), (0, 2.10), (0, 1.70), (1, 3.50), (0, np.nan), (0, 2.90), (3, 2.0)]
    k, m = zip(*marks, strict=True)
    mfe, mae = perf.path_excursions(side, entry, exit_, k, m)
    assert mfe[:3] == pytest.approx([0.45, 0.30, 0.0])
    assert mae[:3] == pytest.approx([0.15, 0.10, 0.20])
    assert math.isnan(mfe[3]) and math.isnan(mae[3])
    # the same as excursions with the path as both highs and lows
    path0 = [2.00, 2.10, 1.70, 2.90, 2.40]
    assert (mfe[0], mae[0]) == pytest.approx(perf.excursions(1, 2.00, path0, path0))
    empty = perf.path_excursions([], [], [], [], [])
    assert empty[0].size == 0 and empty[1].size == 0
