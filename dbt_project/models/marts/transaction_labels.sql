with

labels as (

    select * from {{ ref('stg_landing__labels') }}

),

transactions as (

    select * from {{ ref('stg_landing__transactions') }}

),

joined as (

    select
        labels.transaction_id,
        labels.is_fraud,
        labels.labeled_at,
        labels.label_source,
        transactions.event_timestamp,
        cast(
            (epoch_us(labels.labeled_at) - epoch_us(transactions.event_timestamp))
            / 86400000000.0
            as double
        ) as label_delay_days

    from labels

    -- A label whose transaction is not (yet) accepted has no event to measure from.
    inner join transactions
        on labels.transaction_id = transactions.transaction_id

)

select * from joined
