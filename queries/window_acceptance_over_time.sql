-- name: window_acceptance_over_time
-- description: Hourly acceptance rate and MAL per deployment and engine source, from engine metric windows (bucketed by window end, UTC).
-- grain: one row per (deployment, source, hour)
-- params: deployment (varchar, default null = all): restrict to one deployment
-- params: source (varchar, default null = all): restrict to one engine source, e.g. vllm-v1-log/2025-09
-- columns: deployment, source, hour, windows, verify_steps, drafted, accepted, acceptance_rate, mean_acceptance_length
with params as (
    select
        getvariable('deployment')::varchar as deployment,
        getvariable('source')::varchar as source
),

weighted as (
    -- MAL per window from counts when the engine printed them, else as printed (SGLang prints only MAL).
    -- Weight: verify_steps when known, else running requests, else 1; with counts everywhere the weighted mean
    -- equals 1 + sum(accepted) / sum(verify_steps) exactly.
    select
        w.deployment,
        w.source,
        date_trunc('hour', w.end_ts) as hour,
        w.verify_steps,
        w.drafted,
        w.accepted,
        coalesce(1 + w.accepted / nullif(w.verify_steps, 0), w.mean_acceptance_length) as mal,
        coalesce(w.verify_steps, w.running_requests, 1) as weight
    from windows as w
    cross join params as p
    where
        (p.deployment is null or w.deployment = p.deployment)
        and (p.source is null or w.source = p.source)
),

final as (
    select
        deployment,
        source,
        hour,
        count(*) as windows,
        sum(verify_steps) as verify_steps,
        sum(drafted)::bigint as drafted,
        sum(accepted)::bigint as accepted,
        sum(accepted) filter (where drafted is not null)
        / nullif(sum(drafted) filter (where accepted is not null), 0) as acceptance_rate,
        sum(mal * weight) filter (where mal is not null)
        / nullif(sum(weight) filter (where mal is not null), 0) as mean_acceptance_length
    from weighted
    group by deployment, source, hour
    order by deployment, source, hour
)

select * from final
