-- Latest close, latest option snapshot time and row counts per symbol.
with last_price_day as (
    select symbol, max(as_of_date) as last_price_date, count(*) as price_rows
    from {{ ref('market_prices') }}
    group by symbol
),
last_close as (
    select p.symbol, p.close as last_close, p.volume as last_volume
    from {{ ref('market_prices') }} p
    join last_price_day d on d.symbol = p.symbol and d.last_price_date = p.as_of_date
),
last_snapshot as (
    select underlying as symbol, max(as_of) as last_option_snapshot
    from {{ ref('option_quotes') }}
    group by underlying
),
snapshot_rows as (
    select q.underlying as symbol, count(*) as option_quotes_in_last_snapshot,
           count(distinct q.expiry) as expiries_in_last_snapshot
    from {{ ref('option_quotes') }} q
    join last_snapshot s on s.symbol = q.underlying and s.last_option_snapshot = q.as_of
    group by q.underlying
)
select d.symbol,
       d.last_price_date,
       c.last_close,
       c.last_volume,
       d.price_rows,
       s.last_option_snapshot,
       coalesce(r.option_quotes_in_last_snapshot, 0) as option_quotes_in_last_snapshot,
       coalesce(r.expiries_in_last_snapshot, 0) as expiries_in_last_snapshot
from last_price_day d
join last_close c on c.symbol = d.symbol
left join last_snapshot s on s.symbol = d.symbol
left join snapshot_rows r on r.symbol = d.symbol
