-- Churn: the active customers at each weekly snapshot, and which of them stop buying.
--   active  : at least one purchase in the 30 days before the snapshot's midnight;
--   churned : no purchase in the 30 days from the snapshot on (the label, horizon_days: 30).
-- The platform gives snapshot_calendar (one snapshot_date per row), computes the declared features as of each
-- snapshot from earlier events only, and blanks the label of a snapshot whose 30 days have not all landed yet,
-- so this query may look ahead freely.
with activity as (
    select distinct account_id, event_date
    from marts.transactions_enriched
),

active as (
    select distinct calendar.snapshot_date, activity.account_id
    from snapshot_calendar as calendar
    inner join activity
        on activity.event_date >= calendar.snapshot_date - interval 30 day
        and activity.event_date < calendar.snapshot_date
),

came_back as (
    select distinct active.snapshot_date, active.account_id
    from active
    inner join activity
        on activity.account_id = active.account_id
        and activity.event_date >= active.snapshot_date
        and activity.event_date < active.snapshot_date + interval 30 day
)

select
    active.account_id,
    active.snapshot_date,
    came_back.account_id is null as churned
from active
left join came_back using (snapshot_date, account_id)
