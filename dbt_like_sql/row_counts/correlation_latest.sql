-- The number of rows of correlation_latest without its pairwise join: the same returns (days, held and rets as in
-- the model); a (symbol_a, symbol_b) row exists when the two symbols have a return on a common session, so the held
-- symbols are grouped by their set of sessions with a return, and two groups whose sets meet give |A| x |B| rows.
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
),
dated as (
    select distinct symbol, as_of_date from rets where r is not null
),
sets as (
    select symbol, string_agg(cast(as_of_date as varchar), ',' order by as_of_date) as sessions
    from dated
    group by symbol
),
groups as (
    select sessions, count(*) as n from sets group by sessions
),
group_days as (
    select distinct s.sessions, d.as_of_date from dated d join sets s on s.symbol = d.symbol
),
meeting as (
    select distinct a.sessions as sessions_a, b.sessions as sessions_b
    from group_days a
    join group_days b on b.as_of_date = a.as_of_date
)
select cast(coalesce(sum(ga.n * gb.n), 0) as bigint) as n
from meeting m
join groups ga on ga.sessions = m.sessions_a
join groups gb on gb.sessions = m.sessions_b
