-- Per book at its latest valuation: trading state, NAV, drawdown, headline Greeks, 99 % VaR and 97.5 % ES (1-day historical), worst stress scenario, open limit breaches, latest compliance status and open alerts.
with latest as (
    select book, max(as_of) as as_of
    from {{ ref('book_nav') }}
    group by book
),
stress_ranked as (
    select s.book, s.scenario_id, s.pnl, s.pnl_pct_nav, s.risk_level,
           row_number() over (partition by s.book order by s.pnl, s.scenario_id) as rn
    from {{ ref('stress_results') }} s
    join latest l on l.book = s.book and l.as_of = s.as_of
),
breaches as (
    select b.book, count(*) as open_breaches
    from {{ ref('limit_status') }} b
    join latest l on l.book = b.book and l.as_of = b.as_of
    where b.status = 'BREACH'
    group by b.book
),
compliance as (
    select c.book, c.status, c.report_date
    from {{ ref('compliance_reports') }} c
    where c.report_date = (select max(c2.report_date) from {{ ref('compliance_reports') }} c2 where c2.book = c.book)
),
alert_latest as (
    select a.book, a.condition_key, a.event, a.level,
           row_number() over (partition by a.condition_key order by a."at" desc, a.attempts desc) as rn
    from {{ ref('alerts') }} a
),
open_alerts as (
    select book,
           count(*) as open_alerts,
           max(case level when 'EMERGENCY' then 4 when 'CRITICAL' then 3 when 'WARNING' then 2 else 1 end)
               as open_alert_severity
    from alert_latest
    where rn = 1 and event <> 'cleared'
    group by book
)
select l.book,
       l.as_of,
       n.as_of_date,
       s.state,
       s.preservation_level,
       n.nav,
       n.daily_pnl,
       n.drawdown_pct,
       g.delta,
       g.dollar_delta,
       g.gamma,
       g.vega_per_vol_point,
       g.theta_per_day,
       v.var as var_99_1d,
       e.expected_shortfall as es_975_1d,
       w.scenario_id as worst_stress_scenario,
       w.pnl as worst_stress_pnl,
       w.pnl_pct_nav as worst_stress_pnl_pct_nav,
       coalesce(b.open_breaches, 0) as open_breaches,
       c.status as compliance_status,
       c.report_date as compliance_report_date,
       coalesce(o.open_alerts, 0) as open_alerts,
       case o.open_alert_severity when 4 then 'EMERGENCY' when 3 then 'CRITICAL' when 2 then 'WARNING'
            when 1 then 'INFO' end as open_alerts_max_level
from latest l
join {{ ref('book_nav') }} n on n.book = l.book and n.as_of = l.as_of
left join {{ ref('trading_state') }} s on s.book = l.book and s.as_of = l.as_of
left join {{ ref('portfolio_greeks') }} g on g.book = l.book and g.as_of = l.as_of and g.scope = 'total'
left join {{ ref('var_results') }} v
  on v.book = l.book and v.as_of = l.as_of and v.method = 'historical' and v.horizon_days = 1 and v.confidence = 0.99
left join {{ ref('var_results') }} e
  on e.book = l.book and e.as_of = l.as_of and e.method = 'historical' and e.horizon_days = 1 and e.confidence = 0.975
left join stress_ranked w on w.book = l.book and w.rn = 1
left join breaches b on b.book = l.book
left join compliance c on c.book = l.book
left join open_alerts o on o.book = l.book
