-- Daily VaR history with backtest exceptions: every backtest observation (VaR made on var_date, the next session's P&L, exception = pnl < -var) and every var_results row not yet backtested (pnl NULL).
select o.book,
       o.method,
       o.confidence,
       o.horizon_days,
       o.var_date,
       o.var,
       o.pnl_date,
       o.pnl,
       o.exception,
       'backtest' as origin
from {{ ref('var_backtest_observations') }} o
union all
select v.book,
       v.method,
       v.confidence,
       v.horizon_days,
       v.as_of_date as var_date,
       v.var,
       null as pnl_date,
       null as pnl,
       null as exception,
       'var_results' as origin
from {{ ref('var_results') }} v
where v.as_of = (select max(v2.as_of) from {{ ref('var_results') }} v2 where v2.book = v.book and v2.as_of_date = v.as_of_date)
  and not exists (
      select 1 from {{ ref('var_backtest_observations') }} o
      where o.book = v.book and o.method = v.method and o.confidence = v.confidence
        and o.horizon_days = v.horizon_days and o.var_date = v.as_of_date
  )
