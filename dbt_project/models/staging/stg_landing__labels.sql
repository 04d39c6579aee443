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
        _partition_date as landed_date,
        _loaded_at as loaded_at,
        _row_number as row_number_in_file

    from source

),

latest_label as (

    -- The newest verdict wins; on equal times a later landing, then fraud, wins.
    -- loaded_at and the file row only make the choice deterministic.
    select * from renamed
    qualify row_number() over (
        partition by transaction_id
        order by
            labeled_at desc,
            landed_date desc,
            is_fraud desc,
            loaded_at desc,
            row_number_in_file desc
    ) = 1

)

select
    transaction_id,
    is_fraud,
    labeled_at,
    label_source,
    landed_date

from latest_label
