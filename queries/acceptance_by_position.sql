-- name: acceptance_by_position
-- description: Per-position conditional acceptance from trace steps: of the steps that reached draft position i, the share that accepted it.
-- grain: one row per (deployment, tau, position); position is 1-based
-- params: deployment (varchar, default null = all): restrict to one deployment
-- columns: deployment, tau, position, reached, accepted, conditional_acceptance, cumulative_acceptance
with params as (
    select getvariable('deployment')::varchar as deployment
),

spec_steps as (
    -- collapse steps to (drafted, accepted) counts first: far fewer rows to expand by position
    select r.deployment, r.tau, s.drafted, s.accepted, count(*) as n
    from steps as s
    inner join requests as r on r.request_id = s.request_id
    cross join params as p
    where s.drafted > 0 and (p.deployment is null or r.deployment = p.deployment)
    group by r.deployment, r.tau, s.drafted, s.accepted
),

positions as (
    -- one row per (step kind, drafted position i); the step reached i when positions 1..i-1 were accepted
    select deployment, tau, accepted, n, unnest(range(1, drafted + 1)) as position
    from spec_steps
),

counts as (
    select
        deployment,
        tau,
        position,
        coalesce(sum(n) filter (where accepted >= position - 1), 0) as reached,
        coalesce(sum(n) filter (where accepted >= position), 0) as accepted,
        sum(n) as drafted_steps
    from positions
    group by deployment, tau, position
),

final as (
    select
        deployment,
        tau,
        position,
        reached::bigint as reached,
        accepted::bigint as accepted,
        -- P(accept i | 1..i-1 accepted, drafted >= i)
        accepted / nullif(reached, 0) as conditional_acceptance,
        -- P(accepted >= i | drafted >= i): the unconditional rate engines print per position
        accepted / nullif(drafted_steps, 0) as cumulative_acceptance
    from counts
    order by deployment, tau, position
)

select * from final
