-- Per book, its latest published valuation (complete runs only): NAV, drawdown, trading state, headline Greeks, 99 % 1-day historical VaR.
with published as (
    select n.book, max(p.as_of) as as_of
    from {{ ref('published_valuations') }} p
    join {{ ref('book_nav') }} n on n.as_of = p.as_of
    group by n.book
)
select b.book,
       b.as_of,
       n.nav,
       n.daily_pnl,
       n.drawdown_pct,
       s.state,
       s.preservation_level,
       g.delta,
       g.dollar_delta,
       g.gamma,
       g.vega_per_vol_point,
       g.theta_per_day,
       v.var as var_99_1d_historical,
       v.expected_shortfall as es_99_1d_historical
from published b
join {{ ref('book_nav') }} n on n.book = b.book and n.as_of = b.as_of
join {{ ref('trading_state') }} s on s.book = b.book and s.as_of = b.as_of
join {{ ref('portfolio_greeks') }} g on g.book = b.book and g.as_of = b.as_of and g.scope = 'total'
left join {{ ref('var_results') }} v
  on v.book = b.book and v.as_of = b.as_of and v.method = 'historical' and v.horizon_days = 1 and v.confidence = 0.99
