-- Limits in BREACH at each book's latest valuation, with when the breach started (first valuation of the current unbroken run of BREACH rows) and how many valuations it has lasted.
with latest as (
    select book, max(as_of) as as_of
    from {{ ref('limit_status') }}
    group by book
),
current_breaches as (
    select s.*
    from {{ ref('limit_status') }} s
    join latest l on l.book = s.book and l.as_of = s.as_of
    where s.status = 'BREACH'
),
last_clear as (
    select s.book, s.limit_name, max(s.as_of) as cleared_at
    from {{ ref('limit_status') }} s
    join current_breaches c on c.book = s.book and c.limit_name = s.limit_name
    where s.status <> 'BREACH'
    group by s.book, s.limit_name
),
runs as (
    select s.book, s.limit_name, min(s.as_of) as breach_since, count(*) as breach_valuations
    from {{ ref('limit_status') }} s
    join current_breaches c on c.book = s.book and c.limit_name = s.limit_name
    left join last_clear lc on lc.book = s.book and lc.limit_name = s.limit_name
    where s.status = 'BREACH' and (lc.cleared_at is null or s.as_of > lc.cleared_at)
    group by s.book, s.limit_name
)
select c.book,
       c.limit_name,
       c.as_of,
       c.value,
       c.threshold,
       c.warn_threshold,
       c.utilization,
       c.detail,
       r.breach_since,
       r.breach_valuations
from current_breaches c
join runs r on r.book = c.book and r.limit_name = c.limit_name
