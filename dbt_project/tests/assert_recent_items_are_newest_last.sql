-- The last element of a user's recent_items must be the item of their last interaction.
with numbered as (
    select
        user_id,
        item_id,
        row_number() over (partition by user_id order by position desc) as from_last
    from {{ ref('training_interactions') }}
)

select features.user_id
from {{ ref('user_features') }} as features
inner join numbered on features.user_id = numbered.user_id and numbered.from_last = 1
where {{ list_last('features.recent_items') }} != numbered.item_id
