-- name: acceptance_over_time
-- description: Hourly acceptance rate and MAL per deployment from requests and their steps (requests bucketed by arrival hour, UTC).
-- grain: one row per (deployment, hour)
-- params: deployment (varchar, default null = all): restrict to one deployment
-- params: since (timestamp, default null = no lower bound): first arrival time to include (UTC)
-- params: until (timestamp, default null = no upper bound): arrivals strictly before this time (UTC)
-- columns: deployment, hour, requests, verify_steps, drafted, accepted, acceptance_rate, mean_acceptance_length
with params as (
    select
        getvariable('deployment')::varchar as deployment,
        getvariable('since')::timestamp as since,
        getvariable('until')::timestamp as until
),

step_totals as (
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted
    from steps
    group by request_id
),

request_totals as (
    select
        r.deployment,
        date_trunc('hour', r.ts) as hour,
        coalesce(s.verify_steps, r.verify_steps) as verify_steps,
        coalesce(s.drafted, r.drafted) as drafted,
        coalesce(s.accepted, r.accepted) as accepted
    from requests as r
    left join step_totals as s on s.request_id = r.request_id
    cross join params as p
    where
        (p.deployment is null or r.deployment = p.deployment)
        and (p.since is null or r.ts >= p.since)
        and (p.until is null or r.ts < p.until)
),

final as (
    select
        deployment,
        hour,
        count(*) as requests,
        coalesce(sum(verify_steps), 0)::bigint as verify_steps,
        coalesce(sum(drafted), 0)::bigint as drafted,
        coalesce(sum(accepted), 0)::bigint as accepted,
        -- each ratio over the records that have both of its counts (an engine per-request record may lack one;
        -- docs/glossary.md), as specdiag summary computes it
        sum(accepted) filter (where drafted is not null)
        / nullif(sum(drafted) filter (where accepted is not null), 0) as acceptance_rate,
        1 + sum(accepted) filter (where verify_steps is not null)
        / nullif(sum(verify_steps) filter (where accepted is not null), 0) as mean_acceptance_length
    from request_totals
    group by deployment, hour
    order by deployment, hour
)

select * from final
