with

source as (

    select * from {{ source('raw', 'accounts') }}
    where _batch_status = 'accepted'

),

renamed as (

    select
        account_id,
        created_at,
        home_country,
        age_band,
        _partition_date as landed_date,
        _loaded_at as loaded_at,
        _row_number as row_number_in_file

    from source

)

select * from renamed
