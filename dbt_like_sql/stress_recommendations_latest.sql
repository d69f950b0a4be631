-- HIGH and CRITICAL stress_results rows at each book's latest stress run, each with the stress layer's own recommendations (book cut, worst-name cut, index hedge: JSON) and the hedging layer's optimized hedge in the same scenario at the same valuation (hedge_stress_effects): its lines, P&L, the loss after it and whether it brings the loss under the HIGH threshold (null columns: the hedging layer recommended no hedge for that valuation).
-- requires: stress_results, hedge_stress_effects
with latest as (
    select book, max(as_of) as as_of
    from {{ ref('stress_results') }}
    group by book
)
select s.as_of,
       s.book,
       s.scenario_id,
       s.scenario_type,
       s.risk_level,
       s.pnl,
       s.pnl_pct_nav,
       s.nav,
       s.worst_symbol,
       s.recommendations,
       h.hedge_ids,
       h.pnl_before as hedge_layer_pnl_before,
       h.hedge_pnl,
       h.pnl_after as pnl_after_hedge,
       h.pnl_pct_nav_after as pnl_pct_nav_after_hedge,
       h.risk_level_after as risk_level_after_hedge,
       h.high_threshold,
       h.under_high_threshold as hedge_under_high_threshold
from {{ ref('stress_results') }} s
join latest l on l.book = s.book and l.as_of = s.as_of
left join {{ ref('hedge_stress_effects') }} h
    on h.book = s.book and h.as_of = s.as_of and h.scenario_id = s.scenario_id
where s.risk_level in ('HIGH', 'CRITICAL')
