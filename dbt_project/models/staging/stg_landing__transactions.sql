with

source as (

    select * from {{ source('raw', 'transactions') }}
    where _batch_status = 'accepted'

),

renamed as (

    select
        transaction_id,
        account_id,
        merchant_id,
        merchant_category,
        amount,
        currency,
        channel,
        country,
        event_timestamp,
        _partition_date as landed_date

    from source

)

select * from renamed
