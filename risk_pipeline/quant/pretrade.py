"""Pre-trade decision for one proposed order: approve, resize to the largest passing size, or reject.

The order changes one position ``p`` (existing, or new with its own per-unit data) by ``s x`` units,
``s = +1`` for a buy and ``-1`` for a sell, ``x`` a whole number of contracts or shares. Every book
aggregate is then ``A_0 + a x`` with ``a`` the order's per-unit contribution, except the position's
gross ``g |q_0 + s x|``, which has one kink at ``x_0 = |q_0|`` when the order shrinks the position.
So each check below is piecewise linear in ``x`` with breakpoints ``{0, x_0, X}`` (``X`` the requested
quantity); its passing set is found exactly by the ratio test on each piece, the sets of all checks
are intersected, and the largest whole ``x`` in the result is verified by evaluating every check
directly at it. ``approve`` when it is ``X``, ``resize`` when it is in ``[1, X)``, ``reject`` when none.
Comparisons allow a relative slack of ``REL_TOL = 1e-12`` so that an order returning a value exactly
to its bound is not refused over float round-off.

Checks (``level`` is the cap, or the warning level when the book is REDUCING and that limit is in
WARN or BREACH; ``v_0`` is the current value of the group the order touches):

* net exposures: the underlying's net delta and gamma shares, the book's net dollar delta and vega
  stay within ``max(level, |v_0|)`` and the theta loss within ``max(level, v_0)``: a breached value
  may only improve;
* concentration (position, its underlying, its sector): its share of ``D(x) = max(gross(x), F)``
  stays within ``max(level, share_0)``, and the largest OTHER position / underlying / sector, whose
  share rises when gross falls, stays within its ``max(level, share_0)``;
* a new underlying: the count stays within ``max(level, count_0)`` and its correlation with every
  held underlying within ``level`` (fails closed when the matrix does not cover it);
* state: HALTED rejects everything; REDUCING allows only risk-reducing orders: shrinking an existing
  position without flipping it, or a trade that does not increase ``|net dollar delta|`` (a hedge);
  an event blackout allows only shrinking an existing position (no new risk in that symbol);
* data: NaN or non-positive order data, NaN book aggregates, no trading state: reject.

VaR and ES are not recomputed per order (they need the risk layer); a book whose VaR or ES is
breached or unavailable is REDUCING or HALTED, which the state check enforces. ``min_positions`` is
advisory and not checked. ``precompute`` builds ``BookAggregates`` once (O(n)); a decision then
costs O(number of underlyings) at most, independent of the number of positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.limits import (
    BREACH,
    WARN,
    BookExposure,
    LimitResult,
    LimitsConfig,
    book_metrics,
    concentration_floor,
    correlation_value,
    daily_loss_pct,
    drawdown_pct,
    make_result,
)
from risk_pipeline.quant.trading_state import HALTED, REDUCING, TradingStateRecord

APPROVE = "approve"
RESIZE = "resize"
REJECT = "reject"
#: Candidates above the ratio-test bound tried by direct evaluation (guards float round-off).
_SEARCH_STEPS = 3
#: Relative slack of every comparison: an order that returns a value exactly to its bound is not
#: refused over one unit in the last place of a float.
REL_TOL = 1e-12

Intervals = list[tuple[float, float]]


@dataclass(frozen=True)
class Instrument:
    """Per-unit data of an instrument not yet in the book (same units as ``BookExposure``)."""

    symbol: str
    sector: str
    multiplier: float
    spot: float
    unit_price: float
    delta: float
    gamma: float = 0.0
    vega: float = 0.0
    theta_per_day: float = 0.0
    is_option: bool = False
    strategy: str = ""


@dataclass(frozen=True)
class Order:
    """A proposed order: ``side`` 'buy' or 'sell', a positive whole ``quantity``.

    ``position_id`` names an existing position (its per-unit data come from the book); otherwise
    ``instrument`` describes a new position (``position_id`` is then its new id, optional).
    """

    side: str
    quantity: float
    position_id: str | None = None
    instrument: Instrument | None = None


@dataclass(frozen=True)
class PreTradeDecision:
    """The decision, the approved whole quantity (0 on reject), every reason, post-trade limits.

    ``post_trade_limits`` are evaluated at the approved quantity, or at the requested one on a
    reject (showing what would break), from the aggregates: VaR/ES are the pre-trade values and the
    correlation row is the pre-trade maximum plus the pairs of a new underlying.
    """

    decision: str
    approved_quantity: int
    requested_quantity: float
    reasons: tuple[str, ...]
    post_trade_limits: tuple[LimitResult, ...]
    #: the name's recommended size (position_sizing) with its method and binding limit, when there is one
    sizing: Mapping[str, Any] | None = None


def _top2(values: FloatArray) -> tuple[int, float, float]:
    """Index of the largest value, the largest and the second largest (0 when absent)."""
    if values.size == 0:
        return -1, 0.0, 0.0
    if values.size == 1:
        return 0, float(values[0]), 0.0
    part = np.argpartition(-values, 1)[:2]
    i, j = (part[0], part[1]) if values[part[0]] >= values[part[1]] else (part[1], part[0])
    return int(i), float(values[i]), float(values[j])


def _other_max(top: tuple[int, float, float], own: int) -> float:
    return top[2] if top[0] == own else top[1]


@dataclass(frozen=True, eq=False)
class BookAggregates:
    """Book totals and per-group sums the order changes, plus the largest groups (``top_*``).

    ``top_*`` hold (index of the largest, largest, second largest) so the largest OTHER group is
    known in O(1). ``missing`` maps an aggregate name to why it is NaN (fail closed).
    """

    exposure: BookExposure
    row_of: dict[str, int]
    held_rank: NDArray[np.intp]
    sym_of: dict[str, int]
    sec_of: dict[str, int]
    symbols: NDArray[np.str_]
    net_delta_by_symbol: FloatArray
    gamma_by_symbol: FloatArray
    gross_by_symbol: FloatArray
    positions_by_symbol: FloatArray
    gross_by_sector: FloatArray
    top_position_gross: tuple[int, float, float]
    top_abs_delta: tuple[int, float, float]
    top_abs_gamma: tuple[int, float, float]
    top_symbol_gross: tuple[int, float, float]
    top_sector_gross: tuple[int, float, float]
    net_dollar_delta: float
    vega: float
    theta_loss: float
    gross: float
    n_underlyings: int
    correlation_max: float
    correlation_pair: tuple[str, ...]
    correlation_note: str
    held_corr_index: NDArray[np.intp] | None
    corr_index: dict[str, int] | None
    missing: dict[str, str]
    drawdown_pct: float
    daily_loss_pct: float


def precompute(exposure: BookExposure, config: LimitsConfig | None = None) -> BookAggregates:
    """Aggregates of ``exposure`` for repeated pre-trade checks (one O(n) pass)."""
    cfg = config or LimitsConfig()
    m = book_metrics(exposure, cfg)
    e, held = exposure, m.held
    sym_of = {s: i for i, s in enumerate(m.symbols.tolist())}
    missing: dict[str, str] = {}
    for name, arrays in (
        ("net delta", (e.quantity, e.multiplier, e.delta)),
        ("net dollar delta and gross", (e.quantity, e.multiplier, e.delta, e.spot)),
        ("gamma", (e.quantity, e.multiplier, e.gamma)),
        ("vega", (e.quantity, e.multiplier, e.vega)),
        ("theta", (e.quantity, e.multiplier, e.theta_per_day)),
    ):
        bad = np.zeros(held.size, dtype=bool)
        for a in arrays:
            bad |= ~np.isfinite(a[held])
        if bad.any():
            ids = e.position_id[held[bad]][:5].tolist()
            missing[name] = f"book {name} not available (NaN inputs at {', '.join(ids)})"
    corr, pair, note = correlation_value(e, m.symbols)
    corr_index = None
    held_idx = None
    if e.correlation is not None and e.correlation_symbols is not None:
        corr_index = {s: i for i, s in enumerate(e.correlation_symbols)}
        if all(s in corr_index for s in sym_of):
            held_idx = np.array([corr_index[s] for s in m.symbols.tolist()], dtype=np.intp)
    return BookAggregates(
        exposure=e,
        row_of={pid: i for i, pid in enumerate(e.position_id.tolist())},
        held_rank=np.where(e.quantity != 0.0, np.cumsum(e.quantity != 0.0) - 1, -1).astype(np.intp),
        sym_of=sym_of,
        sec_of={s: i for i, s in enumerate(m.sectors.tolist())},
        symbols=m.symbols,
        net_delta_by_symbol=m.net_delta_by_symbol,
        gamma_by_symbol=m.gamma_by_symbol,
        gross_by_symbol=m.gross_by_symbol,
        positions_by_symbol=np.bincount(m.sym_inv, minlength=m.symbols.size).astype(np.float64),
        gross_by_sector=m.gross_by_sector,
        top_position_gross=_top2(e.gross[held]),
        top_abs_delta=_top2(np.abs(m.net_delta_by_symbol)),
        top_abs_gamma=_top2(np.abs(m.gamma_by_symbol)),
        top_symbol_gross=_top2(m.gross_by_symbol),
        top_sector_gross=_top2(m.gross_by_sector),
        net_dollar_delta=m.net_dollar_delta,
        vega=m.vega,
        theta_loss=m.theta_loss,
        gross=m.gross,
        n_underlyings=int(m.symbols.size),
        correlation_max=corr,
        correlation_pair=pair,
        correlation_note=note,
        held_corr_index=held_idx,
        corr_index=corr_index,
        missing=missing,
        drawdown_pct=drawdown_pct(e.nav, e.peak_nav),
        daily_loss_pct=daily_loss_pct(e.nav, e.daily_pnl),
    )


# ---- interval sets over x ------------------------------------------------------------------------


def _intersect(a: Intervals, b: Intervals) -> Intervals:
    out = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return sorted(out)


def _union(a: Intervals, b: Intervals) -> Intervals:
    out: Intervals = []
    for lo, hi in sorted(a + b):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _passing(xs: list[float], f: Callable[[float], float], bound: float) -> Intervals:
    """``{x in [xs[0], xs[-1]] : f(x) <= bound}`` for ``f`` linear between the breakpoints ``xs``."""
    fs = [f(x) for x in xs]
    out: Intervals = []
    for a, c, fa, fc in zip(xs[:-1], xs[1:], fs[:-1], fs[1:], strict=True):
        ok_a, ok_c = fa <= bound, fc <= bound
        if ok_a and ok_c:
            out = _union(out, [(a, c)])
        elif ok_a or ok_c:
            t = a + (bound - fa) * (c - a) / (fc - fa)
            out = _union(out, [(a, t)] if ok_a else [(t, c)])
    if len(xs) == 1 and fs[0] <= bound:
        out = [(xs[0], xs[0])]
    return out


@dataclass(frozen=True)
class _Form:
    """``f(x) <= bound`` up to ``REL_TOL * max(|bound|, scale)``; a check passes where any form does."""

    f: Callable[[float], float]
    bound: float
    scale: float = 0.0

    @property
    def limit(self) -> float:
        return self.bound + REL_TOL * max(abs(self.bound), self.scale)


@dataclass(frozen=True)
class _Check:
    """One named check: forms (a union) and a message for a failing ``x``."""

    limit: str
    forms: tuple[_Form, ...]
    message: Callable[[float], str]

    def passes(self, x: float) -> bool:
        return any(form.f(x) <= form.limit for form in self.forms)

    def passing(self, xs: list[float]) -> Intervals:
        out: Intervals = []
        for form in self.forms:
            out = _union(out, _passing(xs, form.f, form.limit))
        return out


def _const(ok: bool) -> Callable[[float], float]:
    """A form that passes only at ``x = 0`` unless ``ok``."""
    return (lambda x: 0.0) if ok else (lambda x: x)


def _fmt(v: float) -> str:
    return f"{v:,.6g}"


def _pct(v: float) -> str:
    return f"{100.0 * v:.2f}%"


def check_order(
    exposure: BookExposure,
    order: Order,
    config: LimitsConfig,
    state: TradingStateRecord | None,
    *,
    event_blackout: bool = False,
    blackout_reason: str = "",
    aggregates: BookAggregates | None = None,
) -> PreTradeDecision:
    """Approve, resize or reject ``order`` against the book, its limits and its trading state.

    ``event_blackout`` says the order's symbol is in an event blackout (``blackout_reason`` why).
    Pass ``aggregates = precompute(exposure, config)`` to reuse them across orders.
    """
    agg = precompute(exposure, config) if aggregates is None else aggregates
    if agg.exposure is not exposure:
        raise ValueError("aggregates were computed for another BookExposure")
    e = exposure
    try:
        x_req = float(order.quantity)
    except (TypeError, ValueError):
        x_req = math.nan
    fatal: list[str] = []
    if order.side not in ("buy", "sell"):
        fatal.append(f"side {order.side!r} must be 'buy' or 'sell'")
    if not (math.isfinite(x_req) and x_req >= 1.0 and x_req.is_integer()):
        fatal.append(f"quantity {order.quantity!r} must be a positive whole number")
    state_reasons: list[str] = []
    if state is None:
        state_reasons.append("no trading state for the book (fail closed)")
    elif state.state == HALTED:
        state_reasons.append(f"book HALTED: {state.reason}")

    # ---- the position the order changes ----
    row = agg.row_of.get(order.position_id) if order.position_id is not None else None
    if row is not None:
        q0 = float(e.quantity[row])
        sym, sec = str(e.symbol[row]), str(e.sector[row])
        mult, spot, price = float(e.multiplier[row]), float(e.spot[row]), float(e.unit_price[row])
        dlt, gam, veg, tht = (float(a[row]) for a in (e.delta, e.gamma, e.vega, e.theta_per_day))
        pid = str(order.position_id)
    elif order.instrument is not None:
        ins = order.instrument
        q0 = 0.0
        sym, sec = ins.symbol, ins.sector
        mult, spot, price = float(ins.multiplier), float(ins.spot), float(ins.unit_price)
        dlt, gam, veg, tht = float(ins.delta), float(ins.gamma), float(ins.vega), float(ins.theta_per_day)
        pid = order.position_id or "<new position>"
    else:
        fatal.append(f"unknown position {order.position_id!r} and no instrument given")
        return PreTradeDecision(REJECT, 0, x_req, tuple(state_reasons + fatal), ())
    values = {"multiplier": mult, "spot": spot, "unit_price": price, "delta": dlt, "gamma": gam}
    values |= {"vega": veg, "theta_per_day": tht, "quantity": q0}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        fatal.append(f"missing (NaN) order data for {pid}: {', '.join(bad)} (fail closed)")
    elif mult <= 0.0 or spot <= 0.0:
        fatal.append(f"multiplier and spot of {pid} must be positive")
    fatal += [f"{msg} (fail closed)" for msg in agg.missing.values()]
    floor = concentration_floor(e.nav, config)
    if not math.isfinite(floor):
        fatal.append("NAV not available for the concentration floor (fail closed)")
    if fatal:
        return PreTradeDecision(REJECT, 0, x_req, tuple(state_reasons + fatal), ())

    s = 1.0 if order.side == "buy" else -1.0
    reducing = state is not None and state.state == REDUCING
    pre = {r.limit_name: r for r in _post_trade(agg, config, _Delta.none())}

    def level(name: str) -> float:
        cap = config.threshold(name)
        assert cap is not None
        r = pre.get(name)
        if reducing and r is not None and r.status in (WARN, BREACH):
            warn = config.warn_threshold(name)
            assert warn is not None
            return warn
        return cap

    # ---- per-unit effect and breakpoints ----
    k_dsh, k_gam = s * mult * dlt, s * mult * gam
    k_dd, k_veg, k_th = k_dsh * spot, s * mult * veg / 100.0, -s * mult * tht
    g_unit = abs(mult * dlt * spot)
    shrinks = q0 != 0.0 and s * q0 < 0.0
    x0 = abs(q0) if shrinks else math.inf
    xs = sorted({0.0, x_req} | ({x0} if x0 < x_req else set()))

    def g_pos(x: float) -> float:
        return g_unit * abs(q0 + s * x)

    g_p0 = g_unit * abs(q0)
    gross_rest = agg.gross - g_p0
    si = agg.sym_of.get(sym, -1)
    ci = agg.sec_of.get(sec, -1)
    n_sym0 = agg.net_delta_by_symbol[si] if si >= 0 else 0.0
    gam_sym0 = agg.gamma_by_symbol[si] if si >= 0 else 0.0
    sym_rest = (agg.gross_by_symbol[si] if si >= 0 else 0.0) - g_p0
    sec_rest = (agg.gross_by_sector[ci] if ci >= 0 else 0.0) - g_p0

    def gross(x: float) -> float:
        return gross_rest + g_pos(x)

    checks: list[_Check] = []

    def net_check(name: str, v0: float, k: float, what: str) -> None:
        if config.threshold(name) is None:
            return
        b = max(level(name), abs(v0))

        def msg(x: float) -> str:
            return f"{name}: {what} would be {_fmt(v0 + k * x)}, beyond +/-{_fmt(b)}"

        checks.append(_Check(name, (_Form(lambda x: v0 + k * x, b),), msg))
        checks.append(_Check(name, (_Form(lambda x: -(v0 + k * x), b),), msg))

    net_check("max_abs_net_delta_shares", n_sym0, k_dsh, f"net delta of {sym} (shares)")
    net_check("max_abs_net_dollar_delta", agg.net_dollar_delta, k_dd, "book net dollar delta")
    net_check("max_abs_gamma_shares", gam_sym0, k_gam, f"net gamma of {sym} (shares)")
    net_check("max_abs_vega_per_vol_point", agg.vega, k_veg, "book vega per vol point")
    if config.threshold("max_theta_per_day_loss") is not None:
        b_th = max(level("max_theta_per_day_loss"), agg.theta_loss)
        th0 = agg.theta_loss
        checks.append(
            _Check(
                "max_theta_per_day_loss",
                (_Form(lambda x: th0 + k_th * x, b_th),),
                lambda x: f"max_theta_per_day_loss: theta loss would be {_fmt(th0 + k_th * x)} > {_fmt(b_th)}",
            )
        )

    d0 = max(agg.gross, floor)

    def share_checks(name: str, label: str, own_rest: float, own0: float, other_gross: float) -> None:
        """Own group ``own_rest + g_pos(x) <= b D(x)``; largest other ``other <= b_o D(x)``."""
        if config.threshold(name) is None:
            return
        lv = level(name)
        b = max(lv, own0 / d0 if d0 > 0.0 else 0.0)

        def own(x: float) -> float:
            return own_rest + g_pos(x)

        forms = [_Form(lambda x: own(x) - b * gross(x), 0.0, d0)]
        if floor > 0.0:
            forms.append(_Form(own, b * floor))

        def own_msg(x: float) -> str:
            d = max(gross(x), floor)
            return f"{name}: {label} would be {_pct(own(x) / d if d > 0 else 0.0)} of gross > {_pct(b)}"

        checks.append(_Check(name, tuple(forms), own_msg))
        if other_gross > 0.0:
            b_o = max(lv, other_gross / d0)
            target = min(other_gross / lv, d0)  # = other_gross / b_o: D(x) must stay at or above it
            if floor < target:

                def other_msg(x: float) -> str:
                    d = max(gross(x), floor)
                    return (
                        f"{name}: gross would fall to {_fmt(gross(x))}, lifting the largest other to "
                        f"{_pct(other_gross / d if d > 0 else 0.0)} > {_pct(b_o)}"
                    )

                checks.append(_Check(name, (_Form(lambda x: -gross(x), -target),), other_msg))

    own_pos = agg.row_of.get(pid, -1) if row is not None else -1
    held_pos_index = _held_rank(agg, own_pos)
    share_checks(
        "max_position_pct_gross",
        f"position {pid}",
        0.0,
        g_p0,
        _other_max(agg.top_position_gross, held_pos_index),
    )
    share_checks(
        "max_underlying_pct_gross",
        f"underlying {sym}",
        sym_rest,
        sym_rest + g_p0,
        _other_max(agg.top_symbol_gross, si),
    )
    share_checks(
        "max_sector_pct_gross",
        f"sector {sec}",
        sec_rest,
        sec_rest + g_p0,
        _other_max(agg.top_sector_gross, ci),
    )

    new_underlying = si < 0
    corr_new, corr_with = _new_correlation(agg, sym) if new_underlying and agg.n_underlyings > 0 else (None, "")
    if new_underlying and config.threshold("max_positions") is not None:
        b_n = max(level("max_positions"), float(agg.n_underlyings))
        ok = agg.n_underlyings + 1 <= b_n
        checks.append(
            _Check(
                "max_positions",
                (_Form(_const(ok), 0.0),),
                lambda x: f"max_positions: a new underlying {sym} would make {agg.n_underlyings + 1} > {_fmt(b_n)}",
            )
        )
    if corr_new is not None and config.threshold("max_pairwise_correlation") is not None:
        corr, why = corr_new, corr_with
        b_c = level("max_pairwise_correlation")
        ok = math.isfinite(corr) and corr <= b_c
        text = (
            f"max_pairwise_correlation: {sym} {why} (fail closed)"
            if not math.isfinite(corr)
            else f"max_pairwise_correlation: {sym} has correlation {corr:.3f} with {why} > {b_c:.3f}"
        )
        checks.append(_Check("max_pairwise_correlation", (_Form(_const(ok), 0.0),), lambda x: text))

    shrink_to = min(x0, x_req) if shrinks else 0.0
    if reducing:
        n_dd = agg.net_dollar_delta
        forms = [_Form(lambda x: x, shrink_to)]
        if k_dd * n_dd < 0.0:  # a hedge: |n_dd + k_dd x| <= |n_dd| for x <= 2 |n_dd| / |k_dd|
            forms.append(_Form(lambda x: x, 2.0 * abs(n_dd) / abs(k_dd)))
        state_text = state.reason if state is not None else ""
        checks.append(
            _Check(
                "trading_state",
                tuple(forms),
                lambda x: (
                    f"book REDUCING: only risk-reducing orders; {x:,.0f} would neither only shrink {pid} "
                    f"nor reduce |net dollar delta| (state: {state_text})"
                ),
            )
        )
    if event_blackout:
        checks.append(
            _Check(
                "event_blackout",
                (_Form(lambda x: x, shrink_to),),
                lambda x: f"event blackout on {sym}: {blackout_reason or 'event'}; no new risk in {sym}",
            )
        )

    # ---- largest passing whole quantity ----
    feasible: Intervals = [] if state_reasons else [(0.0, x_req)]
    for chk in checks:
        if not feasible:
            break
        feasible = _intersect(feasible, chk.passing(xs))
    approved = 0
    for lo, hi in reversed(feasible):
        top = int(min(x_req, math.floor(hi) + _SEARCH_STEPS))
        bottom = max(math.ceil(lo), 1, top - 2 * _SEARCH_STEPS)
        for cand in range(top, bottom - 1, -1):
            if all(chk.passes(float(cand)) for chk in checks):
                approved = cand
                break
        if approved:
            break
    failing = [chk.message(x_req) for chk in checks if not chk.passes(x_req)]
    if approved == 0:
        failing += [chk.message(1.0) for chk in checks if not chk.passes(1.0)]
    reasons = state_reasons + list(dict.fromkeys(failing))
    if approved == int(x_req):
        decision = APPROVE
        reasons = ["all pre-trade checks pass"]
    elif approved >= 1:
        decision = RESIZE
        reasons.insert(0, f"resized from {int(x_req)} to {approved}")
    else:
        decision = REJECT
    x_report = float(approved) if approved else x_req
    delta = _Delta(
        x=x_report,
        s=s,
        q0=q0,
        g_unit=g_unit,
        k_dsh=k_dsh,
        k_dd=k_dd,
        k_gam=k_gam,
        k_veg=k_veg,
        k_th=k_th,
        sym_index=si,
        sec_index=ci,
        pos_index=held_pos_index,
        sym_rest=sym_rest,
        sec_rest=sec_rest,
        n_sym0=n_sym0,
        gam_sym0=gam_sym0,
        new_sym=new_underlying,
        new_corr=corr_new,
        new_pair=f"{sym}/{corr_with}",
        pid=pid,
        sym=sym,
        sec=sec,
    )
    post = tuple(_post_trade(agg, config, delta))
    return PreTradeDecision(decision, int(approved), x_req, tuple(reasons), post)


def _held_rank(agg: BookAggregates, row: int) -> int:
    """Index of book row ``row`` among the held positions (``-1`` when not held or no row)."""
    return -1 if row < 0 else int(agg.held_rank[row])


def _new_correlation(agg: BookAggregates, sym: str) -> tuple[float, str]:
    """Largest correlation of a new underlying with the held ones, and the partner (or why NaN)."""
    if agg.corr_index is None:
        return math.nan, "no correlation matrix given"
    if agg.held_corr_index is None:
        return math.nan, "correlation matrix does not cover every held underlying"
    k = agg.corr_index.get(sym)
    if k is None:
        return math.nan, "is not in the correlation matrix"
    row = agg.exposure.correlation[k, agg.held_corr_index]  # type: ignore[index]
    if not np.all(np.isfinite(row)):
        return math.nan, "has NaN correlations with held underlyings"
    j = int(np.argmax(row))
    return float(row[j]), str(agg.symbols[j])


@dataclass(frozen=True)
class _Delta:
    """The order's change to the aggregates at quantity ``x`` (``none()`` = no order)."""

    x: float
    s: float
    q0: float
    g_unit: float
    k_dsh: float
    k_dd: float
    k_gam: float
    k_veg: float
    k_th: float
    sym_index: int
    sec_index: int
    pos_index: int
    sym_rest: float
    sec_rest: float
    n_sym0: float
    gam_sym0: float
    new_sym: bool
    new_corr: float | None
    new_pair: str
    pid: str
    sym: str
    sec: str

    @staticmethod
    def none() -> _Delta:
        z = 0.0
        return _Delta(z, 1.0, z, z, z, z, z, z, z, -1, -1, -1, z, z, z, z, False, None, "", "", "", "")


def _post_trade(agg: BookAggregates, config: LimitsConfig, d: _Delta) -> list[LimitResult]:
    """Limit rows of the book after the order (``d``), from the aggregates only."""
    e = agg.exposure
    x = d.x
    g_new = d.g_unit * abs(d.q0 + d.s * x)
    g_old = d.g_unit * abs(d.q0)
    gross = agg.gross - g_old + g_new
    floor = concentration_floor(e.nav, config)
    denom = max(gross, floor)
    rows: list[LimitResult | None] = []

    def group_max(top: tuple[int, float, float], own: int, own_value: float) -> float:
        return max(_other_max(top, own), own_value)

    def share(v: float) -> float:
        return v / denom if denom > 0.0 else 0.0

    rows.append(
        make_result(
            config,
            "max_abs_net_delta_shares",
            group_max(agg.top_abs_delta, d.sym_index, abs(d.n_sym0 + d.k_dsh * x)),
        )
    )
    rows.append(make_result(config, "max_abs_net_dollar_delta", abs(agg.net_dollar_delta + d.k_dd * x)))
    rows.append(
        make_result(
            config,
            "max_abs_gamma_shares",
            group_max(agg.top_abs_gamma, d.sym_index, abs(d.gam_sym0 + d.k_gam * x)),
        )
    )
    rows.append(make_result(config, "max_abs_vega_per_vol_point", abs(agg.vega + d.k_veg * x)))
    rows.append(make_result(config, "max_theta_per_day_loss", agg.theta_loss + d.k_th * x))
    note = "pre-trade value (not recomputed per order)"
    for name, risk in (("max_var_99_1d", e.var_99_1d), ("max_es_975_1d", e.es_975_1d)):
        rows.append(
            make_result(config, name, math.nan, (), "not produced by the risk layer (None)")
            if risk is None
            else make_result(config, name, float(risk), (), note)
        )
    other_pos = _other_max(agg.top_position_gross, d.pos_index)
    rows.append(make_result(config, "max_position_pct_gross", share(max(other_pos, g_new))))
    other_sym = _other_max(agg.top_symbol_gross, d.sym_index)
    rows.append(make_result(config, "max_underlying_pct_gross", share(max(other_sym, d.sym_rest + g_new))))
    other_sec = _other_max(agg.top_sector_gross, d.sec_index)
    rows.append(make_result(config, "max_sector_pct_gross", share(max(other_sec, d.sec_rest + g_new))))
    count = float(agg.n_underlyings)
    open_after = d.q0 + d.s * x != 0.0
    if d.new_sym and open_after:
        count += 1.0
    elif d.sym_index >= 0 and d.q0 != 0.0 and not open_after and agg.positions_by_symbol[d.sym_index] == 1.0:
        count -= 1.0
    rows.append(make_result(config, "min_positions", count))
    rows.append(make_result(config, "max_positions", count))
    corr = agg.correlation_max
    pair = agg.correlation_pair
    if d.new_corr is not None and x > 0:
        if not math.isfinite(d.new_corr) or not math.isfinite(corr) or d.new_corr > corr:
            corr, pair = d.new_corr, (d.new_pair,)
    rows.append(make_result(config, "max_pairwise_correlation", corr, pair, agg.correlation_note))
    rows.append(make_result(config, "max_daily_loss_pct_nav", agg.daily_loss_pct))
    rows.append(make_result(config, "max_drawdown_pct", agg.drawdown_pct))
    return [r for r in rows if r is not None]
