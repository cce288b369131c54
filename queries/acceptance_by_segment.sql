-- name: acceptance_by_segment
-- description: Acceptance rate and mean acceptance length (MAL) per deployment and task, from requests and their steps.
-- grain: one row per (deployment, task); task is null for untagged traffic
-- params: deployment (varchar, default null = all): restrict to one deployment
-- columns: deployment, task, requests, control_requests, verify_steps, drafted, accepted, acceptance_rate, mean_acceptance_length
with params as (
    select getvariable('deployment')::varchar as deployment
),

step_totals as (
    -- verify_steps counts steps that drafted something; tau = 0 decode steps count toward nothing
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted
    from steps
    group by request_id
),

request_totals as (
    -- totals from the request's steps when it has any, else as printed by the engine (per-request records)
    select
        r.deployment,
        r.task,
        r.tau,
        coalesce(s.verify_steps, r.verify_steps) as verify_steps,
        coalesce(s.drafted, r.drafted) as drafted,
        coalesce(s.accepted, r.accepted) as accepted
    from requests as r
    left join step_totals as s on s.request_id = r.request_id
    cross join params as p
    where p.deployment is null or r.deployment = p.deployment
),

final as (
    select
        deployment,
        task,
        count(*) as requests,
        count(*) filter (where tau = 0) as control_requests,
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
    group by deployment, task
    order by deployment, task nulls first
)

select * from final
