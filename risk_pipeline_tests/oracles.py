"""QuantLib as the independent oracle: an option with exactly a stored row's inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import QuantLib as ql


def quantlib_option(row: pd.Series, vol: float | None = None) -> tuple[ql.VanillaOption, float]:
    """The row's option in QuantLib, and the scale used to hit its exact time to expiry.

    QuantLib counts whole days, so the option runs 10,000 days with every rate scaled by
    ``scale = T / (10000 / 365)`` and the vol by ``sqrt(scale)``: the same total variance and discount
    factors as the row's ``time_to_expiry_years``. By the chain rule the row's vega is QuantLib's times
    ``sqrt(scale)``, rho times ``scale`` and theta divided by ``scale``. American exercise uses a
    1001-step Leisen-Reimer tree (QuantLib has Bjerksund-Stensland 1993 only, not 2002).
    """
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    days = 10_000
    scale = float(row["time_to_expiry_years"]) / (days / 365.0)
    sigma = float(row["implied_vol"] if vol is None else vol)
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(float(row["spot"]))),
        ql.YieldTermStructureHandle(ql.FlatForward(today, float(row["dividend_yield"]) * scale, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, float(row["rate"]) * scale, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), sigma * np.sqrt(scale), dc)),
    )
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if row["option_type"] == "C" else ql.Option.Put, float(row["strike"]))
    if row["exercise_style"] == "american":
        option = ql.VanillaOption(payoff, ql.AmericanExercise(today, today + days))
        option.setPricingEngine(ql.BinomialVanillaEngine(process, "lr", 1001))
    else:
        option = ql.VanillaOption(payoff, ql.EuropeanExercise(today + days))
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option, scale
