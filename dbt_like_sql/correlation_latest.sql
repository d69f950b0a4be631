-- Pairwise correlation of daily log returns over the last 63 returns (64 sessions of market_prices up to the latest) of the symbols held at the latest positions date; both orders of each pair and the diagonal.
with days as (
    select as_of_date
    from (select distinct as_of_date from {{ ref('market_prices') }}) d
    order by as_of_date desc
    limit 64
),
held as (
    select distinct symbol
    from {{ ref('positions') }}
    where as_of_date = (select max(as_of_date) from {{ ref('positions') }})
),
rets as (
    select p.symbol,
           p.as_of_date,
           ln(p.close / lag(p.close) over (partition by p.symbol order by p.as_of_date)) as r
    from {{ ref('market_prices') }} p
    join held h on h.symbol = p.symbol
    where p.as_of_date in (select as_of_date from days)
)
select (select max(as_of_date) from days) as as_of_date,
       a.symbol as symbol_a,
       b.symbol as symbol_b,
       corr(a.r, b.r) as correlation,
       count(*) as n_returns
from rets a
join rets b on b.as_of_date = a.as_of_date
where a.r is not null and b.r is not null
group by a.symbol, b.symbol
