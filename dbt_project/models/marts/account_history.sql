with

snapshots as (

    select * from {{ ref('stg_landing__account_snapshots') }}

),

-- One state per account and landing day: the last row of the latest load wins.
daily_state as (

    select * from snapshots
    qualify row_number() over (
        partition by account_id, landed_date
        order by loaded_at desc, row_number_in_file desc
    ) = 1

),

compared as (

    select
        *,
        row_number() over by_day as nth_state,
        lag(created_at) over by_day as previous_created_at,
        lag(home_country) over by_day as previous_home_country,
        lag(age_band) over by_day as previous_age_band

    from daily_state
    window by_day as (partition by account_id order by landed_date)

),

changes as (

    select * from compared
    where nth_state = 1
        or created_at is distinct from previous_created_at
        or home_country is distinct from previous_home_country
        or age_band is distinct from previous_age_band

)

select
    account_id,
    created_at,
    home_country,
    age_band,
    landed_date,
    -- A snapshot lands in a daily batch, so the platform knows it from the end of its
    -- landing day; features of earlier events must not see it.
    cast(landed_date + interval 1 day as timestamp) as valid_from

from changes
