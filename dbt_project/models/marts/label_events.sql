with

label_events as (

    select * from {{ ref('stg_landing__label_events') }}

),

transactions as (

    select * from {{ ref('stg_landing__transactions') }}

),

joined as (

    select
        label_events.transaction_id,
        label_events.is_fraud,
        label_events.labeled_at,
        label_events.label_source,
        label_events.landed_date,
        transactions.event_timestamp

    from label_events

    -- As in transaction_labels: a verdict on a transaction not accepted has no event.
    inner join transactions
        on label_events.transaction_id = transactions.transaction_id

)

select * from joined
