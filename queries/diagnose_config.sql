-- name: diagnose_config
-- description: when each configuration value was in use, per deployment and task: diagnose names the change
--   (a new draft_model or target_model version, a tau, temperature or acceptance-rule change) that coincides
--   with an acceptance change point, and flags lossy acceptance rules and target_model = draft_model.
-- grain: one row per (deployment, task, setting, value)
-- params: none
-- columns: deployment, task, setting, value, first_seen, last_seen, n (requests)
with step_totals as (
    -- requests stored without totals (trace lines without them): sum their steps
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        count(*) as decode_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted,
        sum(draft_ms) as draft_ms,
        sum(verify_ms) as verify_ms
    from steps
    where request_id in (select request_id from requests where drafted is null)
    group by request_id
),

req as (
    -- one row per request with its totals and the segment buckets diagnose compares
    select
        r.request_id,
        r.ts,
        date_trunc('hour', r.ts) as hour,
        r.deployment,
        coalesce(r.task, 'unknown') as task,
        coalesce(r.target_model, 'unknown') as target_model,
        coalesce(r.draft_model, 'unknown') as draft_model,
        coalesce(r.tau, 0) as tau,
        r.temperature,
        r.top_p,
        r.acceptance,
        r.quality,
        r.shadow_match,
        r.batch_size,
        r.prompt,
        r.prompt_tokens,
        r.output_tokens,
        coalesce(r.drafted, s.drafted, 0) as drafted,
        coalesce(r.accepted, s.accepted, 0) as accepted,
        coalesce(r.verify_steps, s.verify_steps, 0) as verify_steps,
        coalesce(r.draft_ms, s.draft_ms) as draft_ms,
        coalesce(r.verify_ms, s.verify_ms) as verify_ms,
        -- decode time of the request in ms: the step timings when logged, else latency after the first token
        coalesce(
            coalesce(r.draft_ms, s.draft_ms, 0) + coalesce(r.verify_ms, s.verify_ms),
            r.latency_ms - coalesce(r.ttft_ms, 0)
        ) as decode_ms,
        case
            when r.temperature is null then 'unknown'
            when r.temperature = 0 then '0'
            when r.temperature <= 0.5 then '(0,0.5]'
            when r.temperature <= 1.0 then '(0.5,1]'
            else '>1'
        end as temperature_bucket,
        case
            when r.batch_size is null then 'unknown'
            when r.batch_size <= 8 then '1-8'
            when r.batch_size <= 32 then '9-32'
            when r.batch_size <= 128 then '33-128'
            else '>128'
        end as batch_bucket,
        case
            when r.prompt_tokens is null then 'unknown'
            when r.prompt_tokens < 256 then '<256'
            when r.prompt_tokens < 1024 then '256-1023'
            when r.prompt_tokens < 4096 then '1024-4095'
            else '>=4096'
        end as prompt_length_bucket
    from requests as r
    left join step_totals as s on s.request_id = r.request_id
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
