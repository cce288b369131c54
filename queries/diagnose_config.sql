-- name: diagnose_config
-- description: when each configuration value was in use, per deployment and task: diagnose names the change
--   (a new draft_model or target_model version, a tau, temperature or acceptance-rule change) that coincides
--   with an acceptance change point, and flags lossy acceptance rules and target_model = draft_model.
-- grain: one row per (deployment, task, setting, value)
-- params: none
-- columns: deployment, task, setting, value, first_seen, last_seen, n (requests)
with req as (
    select * from request_facts
),

settings as (
    select deployment, task, ts, 'draft_model' as setting, draft_model as value from req where tau > 0
    union all
    select deployment, task, ts, 'target_model', target_model from req
    union all
    select deployment, task, ts, 'tau', tau::varchar from req
    union all
    select deployment, task, ts, 'temperature', coalesce(temperature::varchar, 'unknown') from req
    union all
    select deployment, task, ts, 'acceptance', coalesce(acceptance, 'unknown') from req where tau > 0
    union all
    select deployment, task, ts, 'same_model', (target_model = draft_model)::varchar
    from req
    where tau > 0 and target_model <> 'unknown'
),

final as (
    select
        deployment,
        task,
        setting,
        value,
        min(ts) as first_seen,
        max(ts) as last_seen,
        count(*) as n
    from settings
    group by deployment, task, setting, value
)

select * from final order by deployment, task, setting, first_seen
