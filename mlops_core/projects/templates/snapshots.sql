-- The {name} project's population and label, one row per (account_id, snapshot_date).
--   population : accounts with a purchase in the 30 days before the snapshot's midnight;
--   high_spend : the label, more than 500 USD spent in the 28 days from the snapshot on (horizon_days: 28).
-- The platform gives snapshot_calendar, computes the declared features as of each snapshot from earlier events
-- only, and blanks the label of a snapshot whose 28 days have not all landed yet.
with active as (
    select distinct calendar.snapshot_date, events.account_id
    from snapshot_calendar as calendar
    inner join marts.transactions_enriched as events
        on events.event_timestamp >= calendar.snapshot_date - interval 30 day
        and events.event_timestamp < calendar.snapshot_date
),

spend_after as (
    select active.snapshot_date, active.account_id, coalesce(sum(events.amount_usd), 0) as spent
    from active
    left join marts.transactions_enriched as events
        on events.account_id = active.account_id
        and events.event_timestamp >= active.snapshot_date
        and events.event_timestamp < active.snapshot_date + interval 28 day
    group by all
)

select account_id, snapshot_date, spent > 500 as high_spend
from spend_after
