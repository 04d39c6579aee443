with

source as (

    select * from {{ source('raw', 'labels') }}
    where _batch_status = 'accepted'

),

renamed as (

    select
        transaction_id,
        is_fraud,
        labeled_at,
        label_source,
        _partition_date as landed_date

    from source

),

-- The same verdict landed twice (a re-sent file) is one event, dated by its first landing.
distinct_verdicts as (

    select
        transaction_id,
        is_fraud,
        labeled_at,
        label_source,
        min(landed_date) as landed_date

    from renamed
    group by transaction_id, is_fraud, labeled_at, label_source

)

select * from distinct_verdicts
