-- Users whose validation or test interaction is earlier than one in an earlier split.
with bounds as (
    select
        user_id,
        max(case when split = 'train' then ts end) as last_train,
        min(case when split = 'validation' then ts end) as validation_ts,
        min(case when split = 'test' then ts end) as test_ts,
        count(*) filter (where split = 'validation') as n_validation,
        count(*) filter (where split = 'test') as n_test
    from {{ ref('training_interactions') }}
    group by user_id
)

select *
from bounds
where
    validation_ts < last_train
    or test_ts < validation_ts
    or n_validation > 1
    or n_test > 1
    or n_validation != n_test
