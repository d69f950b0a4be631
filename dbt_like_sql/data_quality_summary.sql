-- Quarantined rows per table (asset), rule and day, counting each partition's latest blocked run.
with latest_run as (
    select asset, partition_key, max(quarantined_at) as last_quarantined_at
    from {{ ref('quarantine') }}
    group by asset, partition_key
)
select q.asset as table_name,
       q.check_name,
       cast(q.quarantined_at at time zone 'UTC' as date) as quarantine_date,
       q.partition_key,
       count(*) as quarantined_rows,
       count(distinct q.run_id) as runs,
       min(q.source_file) as example_file
from {{ ref('quarantine') }} q
join latest_run l
  on l.asset = q.asset and l.partition_key = q.partition_key and l.last_quarantined_at = q.quarantined_at
group by q.asset, q.check_name, cast(q.quarantined_at at time zone 'UTC' as date), q.partition_key
