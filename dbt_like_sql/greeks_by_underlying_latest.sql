-- Greeks per book and underlying at each book's latest valuation (portfolio_greeks, scope underlying).
with latest as (
    select book, max(as_of) as as_of
    from {{ ref('portfolio_greeks') }}
    group by book
)
select g.book,
       g.as_of,
       g.as_of_date,
       g.scope_value as underlying,
       g.delta,
       g.dollar_delta,
       g.gamma,
       g.dollar_gamma_1pct,
       g.vega_per_vol_point,
       g.theta_per_day,
       g.rho_per_pct,
       g.beta_weighted_delta,
       g.market_value,
       g.positions_count
from {{ ref('portfolio_greeks') }} g
join latest l on l.book = g.book and l.as_of = g.as_of
where g.scope = 'underlying'
