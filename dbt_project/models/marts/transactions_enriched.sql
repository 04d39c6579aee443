with

transactions as (

    select * from {{ ref('stg_landing__transactions') }}

),

accounts as (

    select * from {{ ref('stg_landing__accounts') }}

),

fx_rates as (

    select * from {{ ref('fx_rates') }}

),

enriched as (

    select
        transactions.transaction_id,
        transactions.account_id,
        transactions.merchant_id,
        transactions.merchant_category,
        transactions.amount,
        transactions.currency,
        transactions.amount * fx_rates.usd_per_unit as amount_usd,
        transactions.channel,
        transactions.channel = 'online' as is_online,
        transactions.country,
        transactions.event_timestamp,
        cast(transactions.event_timestamp as date) as event_date,
        cast(hour(transactions.event_timestamp) as integer) as hour_of_day,
        -- 0 = Monday .. 6 = Sunday, the same numbering as pandas' dayofweek.
        cast(isodow(transactions.event_timestamp) - 1 as integer) as day_of_week,
        isodow(transactions.event_timestamp) >= 6 as is_weekend,
        accounts.home_country,
        accounts.age_band,
        accounts.created_at as account_created_at,
        -- Complete 24-hour days since opening, as of the event. floor, not date_diff
        -- (which counts midnights) nor truncation (which would turn an account opened
        -- after its transaction into age 0 instead of a negative the tests catch).
        cast(
            floor(
                (epoch_us(transactions.event_timestamp) - epoch_us(accounts.created_at))
                / 86400000000
            ) as integer
        ) as account_age_days,
        transactions.country <> accounts.home_country as is_foreign,
        transactions.landed_date

    from transactions

    left join accounts
        on transactions.account_id = accounts.account_id

    left join fx_rates
        on transactions.currency = fx_rates.currency

)

select * from enriched
