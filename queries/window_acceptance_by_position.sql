-- name: window_acceptance_by_position
-- description: Per-position conditional acceptance from engine windows' accepted_per_position counts.
-- grain: one row per (deployment, source, tau, position); position is 1-based
-- params: deployment (varchar, default null = all): restrict to one deployment
-- columns: deployment, source, tau, position, reached, accepted, conditional_acceptance, cumulative_acceptance
with params as (
    select getvariable('deployment')::varchar as deployment
),

per_window as (
    -- accepted_per_position[i] = verify steps whose accepted count reached i (1-based here)
    select
        w.deployment,
        w.source,
        w.tau,
        w.verify_steps,
        w.accepted_per_position as counts,
        unnest(range(1, len(w.accepted_per_position) + 1)) as position
    from windows as w
    cross join params as p
    where
        w.accepted_per_position is not null
        and w.verify_steps is not null
        and (p.deployment is null or w.deployment = p.deployment)
),

per_position as (
    -- position i is reached by every step at i = 1, else by the steps that accepted position i - 1
    select
        deployment,
        source,
        tau,
        position,
        verify_steps,
        case when position = 1 then verify_steps else counts[position - 1] end as reached,
        counts[position] as accepted
    from per_window
),

final as (
    select
        deployment,
        source,
        tau,
        position,
        sum(reached) as reached,
        sum(accepted) as accepted,
        sum(accepted) / nullif(sum(reached), 0) as conditional_acceptance,
        sum(accepted) / nullif(sum(verify_steps), 0) as cumulative_acceptance
    from per_position
    group by deployment, source, tau, position
    order by deployment, source, tau nulls first, position
)

select * from final
