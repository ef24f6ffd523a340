with source as (
    select * from {{ source('landing', 'users') }}
),

renamed as (
    select
        cast(user_id as varchar) as user_id,
        segment,
        cast(age as integer) as age,
        gender,
        occupation,
        row_number() over (partition by user_id order by segment) as copy_number
    from source
    where user_id is not null
)

select
    user_id,
    segment,
    age,
    gender,
    occupation
from renamed
where copy_number = 1
