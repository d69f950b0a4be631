"""The model-consistent vol shock: the correlated shift of v0, the shocked surface against QuantLib, homogeneity,
per-position shifts revalued by the scenario engine."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import QuantLib as ql
from scipy.optimize import brentq
from scipy.stats import norm

from risk_pipeline.quant.heston import HestonParams
from risk_pipeline.quant.heston_stress import V0_FLOOR, heston_vol_shifts, model_consistent_vols, shocked_v0
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate

PARAMS = HestonParams(0.04, 1.5, 0.05, 0.8, -0.7)


def _quantlib_vol(p: HestonParams, spot: float, strike: float, days: int, r: float, q: float) -> float:
    """Black-Scholes vol of QuantLib's analytic Heston price (adaptive Gauss-Lobatto), by Brent."""
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.HestonProcess(
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.QuoteHandle(ql.SimpleQuote(spot)),
        p.v0,
        p.kappa,
        p.theta,
        p.xi,
        p.rho,
    )
    call = strike > spot
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, strike), ql.EuropeanExercise(today + days)
    )
    option.setPricingEngine(ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-13, 1_000_000))
    price, t, w = option.NPV(), days / 365.0, 1.0 if call else -1.0
    fwd, df = spot * math.exp((r - q) * t), math.exp(-r * t)

    def black(vol: float) -> float:
        sd = vol * math.sqrt(t)
        d1 = math.log(fwd / strike) / sd + 0.5 * sd
        return df * w * (fwd * norm.cdf(w * d1) - strike * norm.cdf(w * (d1 - sd))) - price

    return brentq(black, 1e-4, 5.0, xtol=1e-15)


def test_v0_moves_with_the_calibrated_correlation() -> None:
    # E[dv | d ln S] = rho xi d ln S: down 20 % with rho -0.7, xi 0.8 adds 0.56 ln(1.25) of variance
    assert shocked_v0(PARAMS, -0.2) == pytest.approx(0.04 + 0.56 * math.log(1.25), rel=1e-15)
    assert shocked_v0(PARAMS, 0.0, extra_vol_shock=0.5) == pytest.approx(0.04 * 2.25, rel=1e-15)
    assert shocked_v0(PARAMS, 3.0) == V0_FLOOR  # a large up-move would make v0 negative
    with pytest.raises(ValueError, match="spot_shock"):
        shocked_v0(PARAMS, -1.0)


def test_shocked_surface_matches_quantlib_at_the_shocked_spot_and_v0() -> None:
    # strikes between the two spots' money, spread with the square root of the expiry (no price near 0)
    moneyness = np.array([-1.5, -0.5, 0.5, 1.5])
    days = np.array([7, 30, 182, 365, 730])
    x, d = (a.ravel() for a in np.meshgrid(moneyness, days, indexing="ij"))
    k = 92.0 * np.exp(x * 0.25 * np.sqrt(d / 365.0))
    shock = model_consistent_vols(PARAMS, 100.0, -0.15, k, d / 365.0, 0.03, 0.01)
    after = shock.params_after
    assert after.v0 == pytest.approx(shocked_v0(PARAMS, -0.15)) and after.kappa == PARAMS.kappa
    want_after = [_quantlib_vol(after, 85.0, float(x), int(n), 0.03, 0.01) for x, n in zip(k, d, strict=True)]
    want_before = [_quantlib_vol(PARAMS, 100.0, float(x), int(n), 0.03, 0.01) for x, n in zip(k, d, strict=True)]
    np.testing.assert_allclose(shock.vol_after, want_after, rtol=1e-8)
    np.testing.assert_allclose(shock.vol_before, want_before, rtol=1e-8)
    # a down move with rho < 0 raises every vol; mean reversion to theta damps it at two years against a week
    assert (shock.vol_change > 0).all()
    by_expiry = shock.vol_change.reshape(moneyness.size, days.size).mean(axis=0)
    assert by_expiry[-1] < 0.5 * by_expiry[0]


def test_without_correlation_the_smile_moves_with_the_forward() -> None:
    """rho = 0 leaves v0 alone; Heston is homogeneous of degree one in (S, K), so the shocked vol at K (1 + s) is
    the unshocked vol at K."""
    p = HestonParams(0.05, 2.0, 0.04, 0.6, 0.0)
    k, t = np.array([70.0, 90.0, 100.0, 115.0, 140.0]), np.array([0.05, 0.25, 1.0, 1.0, 2.0])
    before = model_consistent_vols(p, 100.0, 0.0, k, t, 0.02, 0.0).vol_before
    after = model_consistent_vols(p, 100.0, -0.25, k * 0.75, t, 0.02, 0.0).vol_after
    np.testing.assert_allclose(after, before, rtol=1e-12)


def _bsm(spot: float, strike: float, t: float, r: float, q: float, vol: float, call: bool) -> float:
    sd = vol * math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q) * t) / sd + 0.5 * sd
    w = 1.0 if call else -1.0
    return w * (spot * math.exp(-q * t) * norm.cdf(w * d1) - strike * math.exp(-r * t) * norm.cdf(w * (d1 - sd)))


def test_vol_shifts_per_position_revalue_in_the_scenario_engine() -> None:
    """Per-position shifts: QuantLib's Heston vol after the move less before, for the modelled name's options; 0
    for its stock and for a name without a model. The scenario engine's P&L with them is Black-Scholes at the
    moved spot and the shifted market vol."""
    strike = np.array([0.0, 90.0, 100.0, 110.0, 50.0])
    days = np.array([0, 30, 91, 365, 182])
    portfolio = Portfolio(
        symbols=("AAA", "BBB"),
        spot=np.array([100.0, 50.0]),
        symbol_index=np.array([0, 0, 0, 0, 1]),
        quantity=np.array([100.0, 2.0, -3.0, 1.0, 4.0]),
        multiplier=100.0,
        is_option=np.array([False, True, True, True, True]),
        is_call=np.array([True, False, True, True, False]),
        strike=np.where(strike > 0, strike, 1.0),
        time_years=days / 365.0,
        implied_vol=np.array([0.0, 0.24, 0.21, 0.2, 0.3]),
        rate=0.03,
        dividend_yield=0.01,
    )
    params = np.array([PARAMS.as_array(), np.full(5, np.nan)])
    moves = np.array([[-0.2, -0.1], [0.1, 0.05], [0.0, 0.0]])
    shifts = heston_vol_shifts(portfolio, params, moves)
    assert shifts.shape == (3, 5)
    np.testing.assert_array_equal(shifts[:, [0, 4]], 0.0)
    np.testing.assert_allclose(shifts[2], 0.0, atol=1e-12)
    for i, s in enumerate(moves[:, 0]):
        after = replace(PARAMS, v0=shocked_v0(PARAMS, s))
        for j in (1, 2, 3):
            want = _quantlib_vol(after, 100.0 * (1 + s), strike[j], int(days[j]), 0.03, 0.01) - _quantlib_vol(
                PARAMS, 100.0, strike[j], int(days[j]), 0.03, 0.01
            )
            assert shifts[i, j] == pytest.approx(want, abs=1e-9)
    scenarios = ScenarioSet(spot_shock_rel=moves, vol_shift_abs=shifts, vol_shift_per_position=True)
    pnl = evaluate(portfolio, scenarios).pnl
    for i in range(3):
        want = moves[i, 0] * 100.0 * 100.0 * 100.0  # the stock
        for j in (1, 2, 3, 4):
            sym = portfolio.symbol_index[j]
            s0 = portfolio.spot[sym]
            args = (strike[j], days[j] / 365.0, 0.03, 0.01)
            call = bool(portfolio.is_call[j])
            moved = _bsm(s0 * (1 + moves[i, sym]), *args, portfolio.implied_vol[j] + shifts[i, j], call)
            want += portfolio.quantity[j] * 100.0 * (moved - _bsm(s0, *args, portfolio.implied_vol[j], call))
        assert pnl[i] == pytest.approx(want, rel=1e-9)


def _three_name_book(
    rng: np.random.Generator, n: int, dividend_yield_by_name: np.ndarray, second_as_first: bool = False
) -> Portfolio:
    """``n`` positions (90 % options, calls and puts) on three names (spots 100, 40, 250) at four expiries, strikes
    about 10 % around spot, in no order; ``second_as_first``: position 1 in position 0's contract."""
    spot = np.array([100.0, 40.0, 250.0])
    sym = rng.integers(0, 3, n)
    days = np.array([30, 91, 182, 365])[rng.integers(0, 4, n)]
    strike = spot[sym] * np.exp(rng.normal(0.0, 0.1, n))
    if second_as_first:
        strike[1], sym[1], days[1] = strike[0], sym[0], days[0]
    return Portfolio(
        symbols=("AAA", "BBB", "CCC"), spot=spot, symbol_index=sym, quantity=np.ones(n), multiplier=100.0,
        is_option=rng.random(n) < 0.9, is_call=rng.random(n) < 0.5, strike=strike, time_years=days / 365.0,
        implied_vol=0.25, rate=0.03, dividend_yield=dividend_yield_by_name[sym],
    )  # fmt: skip


def test_vol_shifts_in_blocks_are_the_whole_book_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three names, four expiries, positions in no order: priced a few (scenario, option) prices at a time
    (``SHIFT_BLOCK`` 7, blocks cutting across slices and names) the shifts are the bits of one call over the whole
    book, and each is ``model_consistent_vols``' change for its name, strike and expiry."""
    import risk_pipeline.quant.heston_stress as hs

    portfolio = pf = _three_name_book(np.random.default_rng(11), 40, np.array([0.0, 0.01, 0.02]))
    n, sym = portfolio.n_positions, portfolio.symbol_index
    params = np.array([PARAMS.as_array(), [0.09, 2.0, 0.06, 0.5, -0.4], [0.02, 0.8, 0.03, 1.1, -0.8]])
    moves = np.array([[-0.15, -0.1, -0.05], [0.1, 0.05, 0.0], [0.0, 0.0, 0.0], [-0.1, 0.1, 0.05]])
    monkeypatch.setattr(hs, "SHIFT_BLOCK", 1 << 20)
    whole = heston_vol_shifts(portfolio, params, moves)
    monkeypatch.setattr(hs, "SHIFT_BLOCK", 7)
    blocks = heston_vol_shifts(portfolio, params, moves)
    np.testing.assert_array_equal(blocks, whole)
    for j in range(n):
        if not portfolio.is_option[j]:
            assert np.all(blocks[:, j] == 0.0)
            continue
        p = HestonParams(*params[sym[j]])
        for i in range(moves.shape[0]):
            want = model_consistent_vols(
                p, pf.spot[sym[j]], moves[i, sym[j]], pf.strike[j], pf.time_years[j], 0.03, pf.dividend_yield[j]
            )
            assert blocks[i, j] == pytest.approx(float(want.vol_change[()]), abs=1e-10)


def _shifts_every_pair_priced(portfolio: Portfolio, params: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """``heston_vol_shifts`` as it was before pairs were shared: every (scenario, option) pair priced, one call."""
    from risk_pipeline.quant.heston_stress import _otm_price_vol

    def _otm_vol(*args: np.ndarray) -> np.ndarray:
        return _otm_price_vol(*args)[1]

    out = np.zeros((moves.shape[0], portfolio.quantity.size))
    sym = portfolio.symbol_index
    use = np.flatnonzero(portfolio.is_option & np.isfinite(params[sym]).all(axis=1) & (portfolio.time_years > 0.0))
    q, t = params[sym[use]], portfolio.time_years[use]
    log_k = (
        np.log(portfolio.strike[use] / portfolio.spot[sym[use]])
        - (portfolio.rate[use] - portfolio.dividend_yield[use]) * t
    )
    before = _otm_vol(t, log_k, *q.T)
    s = moves[:, sym[use]]
    v0_after = np.maximum(q[:, 0] + q[:, 4] * q[:, 3] * np.log1p(s), V0_FLOOR)
    shape = s.shape
    after = _otm_vol(
        np.broadcast_to(t, shape).ravel(),
        (log_k[None, :] - np.log1p(s)).ravel(),
        v0_after.ravel(),
        *(np.broadcast_to(q[:, i], shape).ravel() for i in (1, 2, 3, 4)),
    ).reshape(shape)
    out[:, use] = after - before[None, :]
    return out


def test_vol_shifts_shared_pairs_are_every_pair_priced_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scenarios that leave a name alone (0.0 and -0.0), repeat another's moves or move a name alike, two positions in
    one contract, and a name whose v0 is below the floor (a zero move still changes its v0): the shifts, whole and in
    blocks of 5 pairs, are the bits of every pair priced on its own, and exactly 0 where the spot does not move and
    v0 is above the floor."""
    import risk_pipeline.quant.heston_stress as hs

    portfolio = _three_name_book(np.random.default_rng(5), 30, np.full(3, 0.01), second_as_first=True)
    sym = portfolio.symbol_index
    params = np.array([PARAMS.as_array(), [0.5 * V0_FLOOR, 2.0, 0.06, 0.5, -0.4], [0.02, 0.8, 0.03, 1.1, -0.8]])
    moves = np.array(
        [[-0.15, -0.1, 0.0], [0.0, 0.0, 0.0], [-0.15, -0.1, 0.0], [-0.0, 0.1, -0.15], [0.1, -0.0, 0.1], [0.0, 0.0, 0.0]]
    )
    want = _shifts_every_pair_priced(portfolio, params, moves)
    for block in (1 << 20, 5):
        monkeypatch.setattr(hs, "SHIFT_BLOCK", block)
        got = heston_vol_shifts(portfolio, params, moves)
        assert got.tobytes() == want.tobytes()
    opt = portfolio.is_option
    still = (moves[:, sym] == 0.0) & (opt & (sym != 1))[None, :]
    assert np.all(got[still] == 0.0)
    assert np.all(got[:, opt & (sym == 1)][moves[:, 1] == 0.0] != 0.0)


def _far_strike_book(quantity: np.ndarray | None = None) -> Portfolio:
    """15-day options on one name (spot 100): calls at strikes 100 to 150, puts at 60 to 95, so that a large move
    leaves some far out of the money (nothing left to invert) while the others keep a model; a second name without
    a model."""
    strike = np.concatenate([np.linspace(100.0, 150.0, 11), np.linspace(60.0, 95.0, 8), [50.0]])
    n = strike.size
    return Portfolio(
        symbols=("AAA", "BBB"), spot=np.array([100.0, 50.0]), symbol_index=np.r_[np.zeros(n - 1, int), 1],
        quantity=np.ones(n) if quantity is None else quantity, multiplier=100.0, is_option=np.ones(n, bool),
        is_call=strike >= 100.0, strike=strike, time_years=np.full(n, 15.0 / 365.0), implied_vol=0.3, rate=0.03,
        dividend_yield=0.01,
    )  # fmt: skip


#: A 500-name fit with a fat right wing (xi 1.57) whose 15-day calls had no price left after a -60 % move.
FAT_WING = np.array([[0.020112, 2.142368, 0.286029, 1.573742, -0.166322], np.full(5, np.nan)])
FAR_MOVES = np.array([[-0.6, 0.1], [-0.3, 0.0], [-0.1, 0.0], [0.0, 0.0], [0.1, 0.0], [0.3, 0.0], [0.6, 0.0]])


def _otm_prices(portfolio: Portfolio, params: np.ndarray, moves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (scenario, option) pair's Heston OTM price per unit forward after the move, priced on its own, and each
    option's before (``heston_price`` directly; NaN for the name without a model)."""
    from risk_pipeline.quant.heston import heston_price

    sym, t = portfolio.symbol_index, portfolio.time_years
    q = params[sym]
    log_k = np.log(portfolio.strike / portfolio.spot[sym]) - (portfolio.rate - portfolio.dividend_yield) * t
    after = np.full((moves.shape[0], sym.size), np.nan)
    for i in range(moves.shape[0]):
        for j in np.flatnonzero(np.isfinite(q).all(axis=1)):
            lk = log_k[j] - math.log1p(moves[i, sym[j]])
            v0 = max(q[j, 0] + q[j, 4] * q[j, 3] * math.log1p(moves[i, sym[j]]), V0_FLOOR)
            after[i, j] = heston_price(1.0, math.exp(lk), t[j], 0.0, 0.0, lk > 0.0, v0, *q[j, 1:])
    before = np.full(sym.size, np.nan)
    for j in np.flatnonzero(np.isfinite(q).all(axis=1)):
        before[j] = heston_price(1.0, math.exp(log_k[j]), t[j], 0.0, 0.0, log_k[j] > 0.0, *q[j])
    return after, before


def test_pairs_below_the_price_floor_keep_their_vol_the_others_their_bits() -> None:
    """Per (scenario, option) pair: where the Heston OTM price before or after the move is under ``PRICE_FLOOR`` of
    the forward, shift 0 and flagged; every other pair of the same options keeps the bits of every pair priced on
    its own (the shifts before the floor); the name without a model gets 0, not flagged. The engine's P&L is
    Black-Scholes at the moved spot with the market vol on fallback pairs and market vol + shift on the others."""
    from risk_pipeline.quant.heston_stress import PRICE_FLOOR, heston_vol_shifts_with_fallback

    portfolio = _far_strike_book(np.linspace(-3.0, 3.0, 20))
    got = heston_vol_shifts_with_fallback(portfolio, FAT_WING, FAR_MOVES)
    after, before = _otm_prices(portfolio, FAT_WING, FAR_MOVES)
    modelled = np.isfinite(after)
    want_fallback = modelled & ((after < PRICE_FLOOR) | (before < PRICE_FLOOR)[None, :])
    np.testing.assert_array_equal(got.fallback, want_fallback)
    assert got.fallback[0].sum() >= 10 and 0 < got.fallback[1:].sum()  # the crash, and pairs of other scenarios
    mixed = got.fallback.any(axis=0) & (~got.fallback & (got.shift != 0.0)).any(axis=0)
    assert mixed.sum() >= 10  # options with a fallback pair keep their model shifts elsewhere
    assert np.all(got.shift[got.fallback] == 0.0) and np.all(got.shift[:, ~modelled[0]] == 0.0)
    assert np.all(np.isfinite(got.shift))
    assert after[got.fallback].min() < 1e-16  # some of them in the series' rounding, where the old rule flipped
    every = _shifts_every_pair_priced(portfolio, FAT_WING, FAR_MOVES)
    keep = modelled & ~want_fallback
    assert got.shift[keep].tobytes() == every[keep].tobytes()
    assert heston_vol_shifts(portfolio, FAT_WING, FAR_MOVES).tobytes() == got.shift.tobytes()

    scenarios = ScenarioSet(spot_shock_rel=FAR_MOVES, vol_shift_abs=got.shift, vol_shift_per_position=True)
    pnl = evaluate(portfolio, scenarios).pnl
    for i in range(FAR_MOVES.shape[0]):
        want = 0.0
        for j in range(portfolio.n_positions):
            s0 = portfolio.spot[portfolio.symbol_index[j]]
            move = FAR_MOVES[i, portfolio.symbol_index[j]]
            args = (portfolio.strike[j], portfolio.time_years[j], 0.03, 0.01)
            call = bool(portfolio.is_call[j])
            vol = 0.3 + (0.0 if got.fallback[i, j] else got.shift[i, j])
            want += (
                portfolio.quantity[j] * 100.0 * (_bsm(s0 * (1 + move), *args, vol, call) - _bsm(s0, *args, 0.3, call))
            )
        assert pnl[i] == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_fallback_pairs_are_worth_nothing_at_either_vol() -> None:
    """A fallback pair's out-of-the-money option at the moved spot is worth under ``PRICE_FLOOR`` of the forward
    under the model, and under the market vol too: the rule moves its value by less than that."""
    from risk_pipeline.quant.heston_stress import PRICE_FLOOR, heston_vol_shifts_with_fallback

    portfolio = _far_strike_book()
    got = heston_vol_shifts_with_fallback(portfolio, FAT_WING, FAR_MOVES)
    after, _ = _otm_prices(portfolio, FAT_WING, FAR_MOVES)
    for i, j in zip(*np.nonzero(got.fallback), strict=True):
        spot = 100.0 * (1.0 + FAR_MOVES[i, 0])
        k, t = portfolio.strike[j], portfolio.time_years[j]
        fwd = spot * math.exp(0.02 * t)
        otm_call = k > fwd
        market = _bsm(spot, k, t, 0.03, 0.01, 0.3, otm_call)
        if after[i, j] < PRICE_FLOOR:  # the model's time value after the move
            assert market < PRICE_FLOOR * fwd and after[i, j] * fwd < PRICE_FLOOR * fwd


@pytest.mark.parametrize("eps", [1e-9, -1e-9])
def test_a_1e9_change_of_the_parameters_moves_no_pair_across_the_floor(eps: float) -> None:
    """The same far strikes with every Heston parameter times 1 + eps: the same fallback pairs, shifts within 1e-5
    of a vol (0.001 vol points: a price a little above the floor carries the series' error of about 1e-14 of the
    forward, which moves with the COS grid) and the P&L within 1e-8 relative (the rule it replaced dropped a whole
    option when a price of 0 became 1e-20, so 1e-9 of the parameters moved a 500-name book's P&L by up to 7.8e-4
    relative)."""
    from risk_pipeline.quant.heston_stress import heston_vol_shifts_with_fallback

    portfolio = _far_strike_book(np.linspace(-3.0, 3.0, 20))
    base = heston_vol_shifts_with_fallback(portfolio, FAT_WING, FAR_MOVES)
    moved = heston_vol_shifts_with_fallback(portfolio, FAT_WING * (1.0 + eps), FAR_MOVES)
    np.testing.assert_array_equal(moved.fallback, base.fallback)
    np.testing.assert_allclose(moved.shift, base.shift, rtol=0.0, atol=1e-5)

    def pnl(shift: np.ndarray) -> np.ndarray:
        return evaluate(
            portfolio, ScenarioSet(spot_shock_rel=FAR_MOVES, vol_shift_abs=shift, vol_shift_per_position=True)
        ).pnl

    np.testing.assert_allclose(pnl(moved.shift), pnl(base.shift), rtol=1e-8)


def test_books_shifted_together_are_each_books_own_call_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three books with the same scenarios: the second holds two of the first's names in another symbol order (one of
    them with a dividend yield of its own, so the same name and expiry is another slice there), the third a name
    without a model and one of the first's; another book with fewer scenarios. Shifted together
    (``heston_vol_shifts_of_books``), whole and in blocks of 7 pairs (a block ends only where an expiry ends), each
    book's shifts and fallbacks are the bits of its own ``heston_vol_shifts_with_fallback`` call; the name and
    expiry slices the books share are built once (COS grids counted)."""
    import risk_pipeline.quant.heston as heston
    import risk_pipeline.quant.heston_stress as hs

    first = _three_name_book(np.random.default_rng(21), 40, np.array([0.0, 0.01, 0.02]))
    rng = np.random.default_rng(22)
    n = 25
    sym = rng.integers(0, 2, n)
    second = Portfolio(
        symbols=("CCC", "AAA"), spot=np.array([250.0, 100.0]), symbol_index=sym, quantity=np.ones(n),
        multiplier=100.0, is_option=rng.random(n) < 0.9, is_call=rng.random(n) < 0.5,
        strike=np.array([250.0, 100.0])[sym] * np.exp(rng.normal(0.0, 0.1, n)),
        time_years=np.array([30, 91, 182, 365])[rng.integers(0, 4, n)] / 365.0, implied_vol=0.25, rate=0.03,
        dividend_yield=np.array([0.02, 0.005])[sym],
    )  # fmt: skip
    third = _far_strike_book()
    params = {"AAA": PARAMS.as_array(), "BBB": [0.09, 2.0, 0.06, 0.5, -0.4], "CCC": [0.02, 0.8, 0.03, 1.1, -0.8]}
    moves = {"AAA": [-0.15, 0.0, 0.1, -0.05], "BBB": [-0.1, 0.0, 0.05, -0.05], "CCC": [-0.05, 0.0, 0.0, 0.1]}

    def book(p: Portfolio, rows: slice = slice(None)) -> tuple[Portfolio, np.ndarray, np.ndarray]:
        prm = np.array([params.get(s, np.full(5, np.nan)) for s in p.symbols], dtype=float)
        return p, prm, np.array([moves.get(s, [0.3, 0.0, -0.2, 0.1]) for s in p.symbols], dtype=float).T[rows]

    books = [book(first), book(second), book(third), book(first, slice(0, 3))]
    slices: list[int] = []
    cos_grid = heston.cos_grid

    def counted(t: np.ndarray, *args: object) -> heston.CosGrid:
        slices.append(np.size(t))
        return cos_grid(t, *args)

    monkeypatch.setitem(hs.heston_price.__globals__, "cos_grid", counted)
    alone = [hs.heston_vol_shifts_with_fallback(*b) for b in books]
    alone_slices = sum(slices)
    for block in (1 << 20, 7):
        monkeypatch.setattr(hs, "SHIFT_BLOCK", block)
        slices.clear()
        together = hs.heston_vol_shifts_of_books(books)
        for got, want in zip(together, alone, strict=True):
            assert got.shift.tobytes() == want.shift.tobytes()
            assert got.fallback.tobytes() == want.fallback.tobytes()
        if block > 1000:
            assert sum(slices) < alone_slices
    assert np.any(together[1].shift != 0.0) and np.any(together[2].fallback)
