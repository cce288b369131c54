-- name: recommend_positions
-- description: Censored acceptance histogram per unit for the tau recommendation (specdiag.acceptance): how many
--   verify steps drafted d tokens and accepted a of them. A step tried positions 1..min(a + 1, d) and accepted
--   1..a; a step with a = d is right-censored at d. Requests logged without steps but with engine per-position
--   counts, and engine windows of deployments that have no request records, are turned into the same histogram:
--   with a fixed tau, accepted_per_position[k] counts the steps that accepted at least k tokens.
-- grain: one row per unit (request, or engine window), drafted and accepted
-- params: none
-- columns: unit_id, unit_key, deployment, drafted, accepted, steps
with from_steps as (
    select s.request_id as unit_id, s.drafted, s.accepted, count(*) as steps
    from steps as s
    where s.drafted > 0
    group by all
),

-- engine records: steps with exactly k accepted = apc[k] - apc[k + 1] (1-based), k = 0 from verify_steps
records as (
    select
        r.request_id as unit_id,
        r.rowid as unit_key,
        r.deployment,
        least(r.tau, len(r.accepted_per_position)) as drafted,
        cast(r.verify_steps as double) as verify_steps,
        r.accepted_per_position as apc
    from requests as r
    where r.accepted_per_position is not null
      and r.verify_steps > 0
      and r.tau > 0
      and r.request_id not in (select unit_id from from_steps)
    union all
    select
        'window:' || coalesce(w.file_id, '') || ':' || coalesce(cast(w.line as varchar), '') as unit_id,
        -1 - w.rowid as unit_key,  -- windows get negative keys, requests their row id
        w.deployment,
        least(coalesce(w.tau, len(w.accepted_per_position)), len(w.accepted_per_position)) as drafted,
        w.verify_steps,
        w.accepted_per_position as apc
    from windows as w
    where w.accepted_per_position is not null
      and w.verify_steps > 0
      and w.deployment not in (select distinct deployment from requests)
),

from_records as (
    select
        c.unit_id,
        c.unit_key,
        c.deployment,
        c.drafted,
        k.accepted,
        case
            when k.accepted = 0 then c.verify_steps - c.apc[1]
            when k.accepted = c.drafted then c.apc[k.accepted]
            else c.apc[k.accepted] - c.apc[k.accepted + 1]
        end as steps
    from records as c
    cross join lateral (select unnest(range(0, c.drafted + 1)) as accepted) as k
    where c.drafted > 0
),

final as (
    select s.unit_id, r.rowid as unit_key, r.deployment, s.drafted, s.accepted, s.steps
    from from_steps as s
    join requests as r on r.request_id = s.unit_id
    union all
    select unit_id, unit_key, deployment, drafted, accepted, steps
    from from_records
)

select * from final
where steps > 0
