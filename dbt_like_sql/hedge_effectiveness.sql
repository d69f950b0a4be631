-- Hedge performance per book and hedge position at each book's latest valuation: daily and cumulative hedge P&L, protection value, cost drag and effectiveness (built where the hedging layer's hedge_performance table exists).
-- requires: hedge_performance
with latest as (
    select book, max(as_of) as as_of
    from {{ ref('hedge_performance') }}
    group by book
)
select h.book,
       h.as_of,
       h.position_id,
       h.symbol,
       h.strategy,
       h.hedge_pnl_day,
       h.hedge_pnl_cum,
       h.protection_value,
       h.cost_drag_pct_nav_yr,
       h.effectiveness,
       h.effectiveness_window
from {{ ref('hedge_performance') }} h
join latest l on l.book = h.book and l.as_of = h.as_of
