"""SABR smile dynamics under a spot move: sticky moneyness at rho = 0, Bartlett's delta direction against
QuantLib's Hagan formula, the conditional drift of alpha by simulation, and the portfolio mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.sabr import sabr_hagan_vol, sabr_obloj_vol
from risk_pipeline.quant.sabr_dynamics import (
    ALPHA_FLOOR_VOL,
    SabrBackboneSlide,
    SabrSlices,
    sabr_vol_shifts,
    shifted_alpha,
    slice_smile_slide,
    slice_vol_shifts,
)

STRIKES = np.array([60.0, 80.0, 95.0, 100.0, 105.0, 120.0, 150.0])
MOVES = np.array([-0.3, -0.1, -0.01, 0.0, 0.02, 0.2])


@pytest.mark.parametrize("formula", ["hagan", "obloj"])
def test_beta_one_without_correlation_is_sticky_moneyness(formula: str) -> None:
    """beta = 1, rho = 0: alpha stays and the smile is a function of K / F, so sigma'(K) = sigma(K F / F')."""
    vol = {"hagan": sabr_hagan_vol, "obloj": sabr_obloj_vol}[formula]
    got = slice_vol_shifts(STRIKES, 100.0, 0.5, 0.25, 1.0, 0.0, 1.1, MOVES, formula)
    for i, s in enumerate(MOVES):
        want = vol(STRIKES / (1.0 + s), 100.0, 0.5, 0.25, 1.0, 0.0, 1.1) - vol(STRIKES, 100.0, 0.5, 0.25, 1.0, 0.0, 1.1)
        np.testing.assert_allclose(got[i], want, atol=1e-14)
    np.testing.assert_array_equal(got[MOVES == 0.0], 0.0)


def _ql_vol(k: float, f: float, t: float, alpha: float, beta: float, nu: float, rho: float) -> float:
    return ql.sabrVolatility(k, f, t, alpha, beta, nu, rho)


@pytest.mark.parametrize(("beta", "rho"), [(1.0, -0.7), (0.5, -0.4), (0.7, 0.3)])
def test_small_move_follows_bartletts_path_against_quantlib(beta: float, rho: float) -> None:
    """d sigma(K) / dF along the move = d sigma / dF + d sigma / d alpha * rho nu / F^beta (Bartlett 2006), the
    partial derivatives by central differences of QuantLib's sabrVolatility (an independent implementation)."""
    f, t, nu = 100.0, 0.75, 0.9
    alpha = 0.3 * f ** (1.0 - beta)
    h = 1e-3  # away from the money: at K = F the formulas switch to the series of z / x(z), which FD would see
    for k in (70.0, 96.0, 130.0):
        d_f = (_ql_vol(k, f + h, t, alpha, beta, nu, rho) - _ql_vol(k, f - h, t, alpha, beta, nu, rho)) / (2 * h)
        ha = h * alpha / f
        d_a = (_ql_vol(k, f, t, alpha + ha, beta, nu, rho) - _ql_vol(k, f, t, alpha - ha, beta, nu, rho)) / (2 * ha)
        want = d_f + d_a * rho * nu / f**beta
        s = 1e-4
        up, down = slice_vol_shifts([k], f, t, alpha, beta, rho, nu, [s, -s], "hagan")[:, 0]
        got = (up - down) / (2 * s * f)
        assert got == pytest.approx(want, rel=1e-6)


def test_alpha_drift_is_the_conditional_mean_of_a_simulated_step() -> None:
    """One Euler step of SABR (dt = 1e-4): the regression of d alpha on dF has slope rho nu / F^beta."""
    rng = np.random.default_rng(5)
    f, alpha, beta, rho, nu, dt = 100.0, 0.3 * 100.0**0.5, 0.5, -0.6, 1.2, 1e-4
    z1, z2 = rng.standard_normal((2, 400_000))
    d_f = alpha * f**beta * math.sqrt(dt) * z1
    d_a = nu * alpha * math.sqrt(dt) * (rho * z1 + math.sqrt(1 - rho * rho) * z2)
    slope = float(np.polyfit(d_f, d_a, 1)[0])
    move = 1e-3
    analytic = (shifted_alpha(alpha, beta, rho, nu, f, move) - alpha) / (f * move)
    assert slope == pytest.approx(rho * nu / f**beta, rel=0.01)
    assert float(analytic) == pytest.approx(rho * nu / f**beta, rel=1e-3)  # (F'^(1-b) - F^(1-b)) / (1-b) ~ dF / F^b


def test_negative_correlation_raises_vols_as_spot_falls_and_alpha_is_floored() -> None:
    down = slice_vol_shifts(STRIKES, 100.0, 0.25, 0.22, 1.0, -0.7, 1.5, [-0.2], "obloj")[0]
    assert (down > 0.05).all()  # a crash lifts the whole smile at fixed strikes
    # a big up-move with rho < 0 drives alpha + rho nu ln(1 + s) below zero: floored at 1 % lognormal vol
    a = shifted_alpha(0.05, 1.0, -0.9, 2.0, 100.0, 1.5)
    assert float(a) == pytest.approx(ALPHA_FLOOR_VOL)
    with pytest.raises(ValueError, match="above -1"):
        shifted_alpha(0.2, 1.0, -0.5, 1.0, 100.0, -1.0)


def test_portfolio_shifts_use_each_positions_slice_and_its_underlyings_move() -> None:
    book = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 0, 1, 1, 0],
        quantity=[10.0, 2.0, -3.0, 4.0, 1.0],
        multiplier=[1.0, 100.0, 100.0, 100.0, 100.0],
        is_option=[False, True, True, True, True],
        is_call=[True, False, True, False, True],
        strike=[1.0, 90.0, 55.0, 45.0, 110.0],
        time_years=[0.0, 0.3, 0.6, 0.6, 0.3],
        implied_vol=[0.0, 0.3, 0.4, 0.45, 0.28],
        rate=0.03,
        dividend_yield=0.01,
    )
    slices = SabrSlices(
        alpha=np.array([0.28, 0.4]),
        beta=np.array([1.0, 0.5]),
        rho=np.array([-0.5, -0.3]),
        nu=np.array([1.0, 0.8]),
        forward=np.array([100.9, 50.6]),
        time_years=np.array([0.3, 0.6]),
        formula=("obloj", "hagan"),
        slice_of_position=np.array([-1, 0, 1, -1, 0]),  # the stock and B's put have no slice
    )
    moves = np.array([[-0.1, 0.05], [0.2, -0.3]])
    got = sabr_vol_shifts(book, slices, moves)
    assert got.shape == (2, 5)
    np.testing.assert_array_equal(got[:, [0, 3]], 0.0)
    for i in range(2):
        for p, j in ((1, 0), (4, 0), (2, 1)):
            s = moves[i, book.symbol_index[p]]
            vol = sabr_obloj_vol if slices.formula[j] == "obloj" else sabr_hagan_vol
            args = (slices.time_years[j],)
            a2 = float(
                shifted_alpha(slices.alpha[j], slices.beta[j], slices.rho[j], slices.nu[j], slices.forward[j], s)
            )
            after = vol(
                book.strike[p], slices.forward[j] * (1 + s), *args, a2, slices.beta[j], slices.rho[j], slices.nu[j]
            )
            before = vol(
                book.strike[p], slices.forward[j], *args, slices.alpha[j], slices.beta[j], slices.rho[j], slices.nu[j]
            )
            assert got[i, p] == pytest.approx(float(after - before), abs=1e-14)


@pytest.mark.parametrize(("beta", "rho"), [(1.0, -0.6), (0.5, -0.3)])
def test_smile_slide_keeps_the_atm_level_and_moves_the_skew_against_quantlib(beta: float, rho: float) -> None:
    """[sigma(K; F') - sigma(F'; F')] - [sigma(K; F) - sigma(F; F)] with alpha fixed, by QuantLib's formula."""
    f, t, nu = 100.0, 0.4, 1.3
    alpha = 0.25 * f ** (1.0 - beta)
    got = slice_smile_slide(STRIKES, f, t, alpha, beta, rho, nu, MOVES, "hagan")
    for i, s in enumerate(MOVES):
        g = f * (1.0 + s)
        for j, k in enumerate(STRIKES):
            want = (_ql_vol(k, g, t, alpha, beta, nu, rho) - _ql_vol(g, g, t, alpha, beta, nu, rho)) - (
                _ql_vol(k, f, t, alpha, beta, nu, rho) - _ql_vol(f, f, t, alpha, beta, nu, rho)
            )
            assert got[i, j] == pytest.approx(want, abs=1e-12)
    # at the moved forward the slide is exactly the ATM vol held: the level is left to the ATM factor
    at_money = slice_smile_slide([f * 0.9], f, t, alpha, beta, rho, nu, [-0.1], "hagan")[0, 0]
    assert at_money == pytest.approx(
        -(_ql_vol(f * 0.9, f, t, alpha, beta, nu, rho) - _ql_vol(f, f, t, alpha, beta, nu, rho)), abs=1e-12
    )


def test_historical_var_with_the_smile_slide_revalues_with_each_options_shift() -> None:
    """historical_var(smile=...) P&L equals evaluate() on the same scenarios with per-position shifts built here
    from QuantLib's formula, and its rows say which smile dynamics were used."""
    from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate
    from risk_pipeline.quant.var import MarketHistory, VarConfig, historical_scenarios, historical_var

    rng = np.random.default_rng(3)
    book = Portfolio(
        symbols=("A",),
        spot=[100.0],
        symbol_index=[0, 0, 0],
        quantity=[5.0, -3.0, 2.0],
        multiplier=[100.0, 100.0, 100.0],
        is_option=[True, True, True],
        is_call=[False, True, False],
        strike=[85.0, 110.0, 100.0],
        time_years=[0.25, 0.25, 0.5],
        implied_vol=[0.33, 0.22, 0.26],
        rate=0.03,
        dividend_yield=0.01,
    )
    slices = SabrSlices(
        alpha=np.array([0.26, 0.27]),
        beta=np.array([1.0, 1.0]),
        rho=np.array([-0.65, -0.6]),
        nu=np.array([1.4, 1.0]),
        forward=np.array([100.5, 101.0]),
        time_years=np.array([0.25, 0.5]),
        formula=("hagan", "hagan"),
        slice_of_position=np.array([0, 0, 1]),
    )
    history = MarketHistory(rng.normal(0, 0.02, (260, 1)), rng.normal(0, 0.04, (260, 1)))
    cfg = VarConfig(horizons=(1, 5), lookback_days=250)
    results, pnl = historical_var(book, history, cfg, smile=SabrBackboneSlide(slices))
    plain, plain_pnl = historical_var(book, history, cfg)
    for h in (1, 5):
        sc = historical_scenarios(history.window(250), h)
        shifts = np.zeros((sc.n_scenarios, 3))
        for p, j in ((0, 0), (1, 0), (2, 1)):
            f, t, a, r, n = (
                float(x[j]) for x in (slices.forward, slices.time_years, slices.alpha, slices.rho, slices.nu)
            )
            k = float(book.strike[p])
            for i, s in enumerate(sc.spot_shock_rel[:, 0]):
                g = f * (1.0 + s)
                shifts[i, p] = (_ql_vol(k, g, t, a, 1.0, n, r) - _ql_vol(g, g, t, a, 1.0, n, r)) - (
                    _ql_vol(k, f, t, a, 1.0, n, r) - _ql_vol(f, f, t, a, 1.0, n, r)
                )
        moved = ScenarioSet(
            sc.spot_shock_rel, vol_scale=sc.vol_scale, vol_shift_abs=shifts, vol_shift_per_position=True
        )
        want = evaluate(book, moved, h * cfg.calendar_days_per_trading_day, american=cfg.american).pnl
        np.testing.assert_allclose(pnl[h], want, rtol=1e-10, atol=1e-8)
        assert not np.allclose(pnl[h], plain_pnl[h])  # the slide changes the P&L
    assert all("smile: SABR backbone" in r.note for r in results)
    assert not any("smile" in r.note for r in plain)


def test_sticky_moneyness_reads_each_options_svi_slice_at_the_moved_log_moneyness() -> None:
    """shift = sqrt(w(k - ln(1 + s)) / T) - sqrt(w(k) / T), k = ln(K / F), raw SVI written out here; a strike at
    the moved forward gets the old ATM vol; stocks and options without a slice get 0."""
    from risk_pipeline.quant.scenario_engine import ScenarioSet
    from risk_pipeline.quant.smile_dynamics import StickyMoneyness, SviSlices

    book = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 0, 1, 1],
        quantity=[10.0, 2.0, -3.0, 4.0],
        multiplier=[1.0, 100.0, 100.0, 100.0],
        is_option=[False, True, True, True],
        is_call=[True, False, True, False],
        strike=[1.0, 90.0, 50.0 * 1.1, 45.0],
        time_years=[0.0, 0.3, 0.6, 0.6],
        implied_vol=[0.0, 0.3, 0.4, 0.45],
    )
    raw = {"a": [0.01, 0.03], "b": [0.1, 0.2], "rho": [-0.6, -0.4], "m": [0.02, -0.05], "sigma": [0.2, 0.3]}
    slices = SviSlices(**{k: np.array(v) for k, v in raw.items()}, forward=np.array([100.5, 50.0]),
                       time_years=np.array([0.3, 0.6]), slice_of_position=np.array([-1, 0, 1, -1]))  # fmt: skip
    moves = np.array([[-0.2, 0.1], [0.05, -0.3]])
    got = StickyMoneyness(slices).shifts(book, ScenarioSet(moves))

    def vol(j: int, k: float) -> float:
        a, b, r, m, sg = (raw[c][j] for c in ("a", "b", "rho", "m", "sigma"))
        return math.sqrt((a + b * (r * (k - m) + math.sqrt((k - m) ** 2 + sg * sg))) / slices.time_years[j])

    for i in range(2):
        for p, j in ((1, 0), (2, 1)):
            s = moves[i, book.symbol_index[p]]
            k = math.log(book.strike[p] / slices.forward[j])
            assert got[i, p] == pytest.approx(vol(j, k - math.log1p(s)) - vol(j, k), abs=1e-14)
    np.testing.assert_array_equal(got[:, [0, 3]], 0.0)
    # B's call struck at 1.1 F: after a +10 % move it is at the money and takes the old ATM vol
    assert got[0, 2] + vol(1, math.log(1.1)) == pytest.approx(vol(1, 0.0), abs=1e-14)


def test_expiry_scaled_atm_moves_against_the_formula_and_a_direct_revaluation() -> None:
    """shift = sigma (c^g - c), g = (30 / max(tau_days, 7))^alpha; historical_var with it revalues each option at
    sigma c^g (built here as an absolute new vol, without vol_scale)."""
    from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves
    from risk_pipeline.quant.var import MarketHistory, VarConfig, historical_scenarios, historical_var
    from risk_pipeline.quant.vol_shocks import VolShockRule

    book = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 0, 0, 1],
        quantity=[100.0, 5.0, -3.0, 4.0],
        multiplier=[1.0, 100.0, 100.0, 100.0],
        is_option=[False, True, True, True],
        is_call=[True, False, True, True],
        strike=[1.0, 95.0, 110.0, 52.0],
        time_years=[0.0, 3 / 365, 1.5, 0.25],
        implied_vol=[0.0, 0.35, 0.22, 0.3],
        rate=0.03,
        dividend_yield=0.01,
    )
    rule = VolShockRule(term_exponent=0.43)
    dyn = ExpiryScaledVolMoves(rule)
    c = np.array([[1.2, 0.9], [0.8, 1.0]])
    got = dyn.shifts(book, ScenarioSet(np.zeros((2, 2)), vol_scale=c))
    for i in range(2):
        for p in (1, 2, 3):
            g = (30.0 / max(book.time_years[p] * 365.0, 7.0)) ** 0.43
            cc = c[i, book.symbol_index[p]]
            assert got[i, p] == pytest.approx(book.implied_vol[p] * (cc**g - cc), abs=1e-15)
    np.testing.assert_array_equal(got[:, 0], 0.0)
    assert "0.430" in dyn.label
    rng = np.random.default_rng(8)
    history = MarketHistory(rng.normal(0, 0.015, (260, 2)), rng.normal(0, 0.05, (260, 2)))
    cfg = VarConfig(horizons=(1, 3), lookback_days=250)
    _, pnl = historical_var(book, history, cfg, term=dyn)
    for h in (1, 3):
        sc = historical_scenarios(history.window(250), h)
        g = (30.0 / np.maximum(book.time_years * 365.0, 7.0)) ** 0.43
        new_vol = book.implied_vol[None, :] * sc.vol_scale[:, book.symbol_index] ** g[None, :]
        direct = ScenarioSet(
            sc.spot_shock_rel, vol_shift_abs=np.where(book.is_option, new_vol - book.implied_vol, 0.0),
            vol_shift_per_position=True,
        )  # fmt: skip
        want = evaluate(book, direct, h * cfg.calendar_days_per_trading_day, american=cfg.american).pnl
        np.testing.assert_allclose(pnl[h], want, rtol=1e-10, atol=1e-8)
