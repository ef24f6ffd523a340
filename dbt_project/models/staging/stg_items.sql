with source as (
    select * from {{ source('landing', 'items') }}
),

renamed as (
    select
        -- ids
        cast(item_id as varchar) as item_id,
        -- descriptive
        title,
        coalesce(category, 'unknown') as category,
        description,
        -- numerics
        cast(price as double) as price,
        row_number() over (partition by item_id order by title) as copy_number
    from source
    where item_id is not null
)

select
    item_id,
    title,
    category,
    description,
    price
from renamed
where copy_number = 1
