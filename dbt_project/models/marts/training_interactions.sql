{#- The sequence model's training data with a time-based leave-last-out split per user:
    the last interaction is `test`, the one before `validation`, the rest `train`. Users with fewer
    than three interactions are all `train`. Split follows position, and position follows time, so
    no later interaction can land in an earlier split. -#}

with interactions as (
    select
        *,
        row_number() over (partition by user_id order by ts, interaction_number) as position,
        count(*) over (partition by user_id) as user_interactions
    from {{ ref('int_interactions') }}
)

select
    interactions.user_id,
    interactions.item_id,
    vocab.item_index,
    interactions.event_type,
    interactions.ts,
    cast(interactions.position as integer) as position,
    case
        when interactions.user_interactions < 3 then 'train'
        when interactions.position = interactions.user_interactions then 'test'
        when interactions.position = interactions.user_interactions - 1 then 'validation'
        else 'train'
    end as split
from interactions
inner join {{ ref('item_vocab') }} as vocab on interactions.item_id = vocab.item_id
order by interactions.user_id, position
