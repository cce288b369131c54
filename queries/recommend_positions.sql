-- name: recommend_positions
-- description: Censored per-position acceptance counts for the tau recommendation (specdiag.acceptance).
--   A step that drafted d and accepted a tried positions 1..min(a+1, d) and accepted positions 1..a; a step with
--   a = d is right-censored at d. Requests logged without steps but with engine per-position counts, and engine
--   windows of deployments that have no request records, contribute the same counts.
-- grain: one row per unit (request, or engine window) and draft position
-- params: max_pos (integer, default 16): positions 1..max_pos are counted
-- columns: unit_id, unit_key, deployment, position, at_risk, accepted
with params as (
    select coalesce(getvariable('max_pos')::integer, 16) as max_pos
),

positions as (
    select unnest(range(1, max_pos + 1)) as position from params
),

step_counts as (
    -- collapse steps to (request, drafted, accepted) first: far fewer rows to expand by position
    select s.request_id, s.drafted, s.accepted, count(*) as n
    from steps as s
    where s.drafted > 0
    group by all
),

from_steps as (
    select
        c.request_id as unit_id,
        p.position,
        sum(c.n) as at_risk,
        sum(case when c.accepted >= p.position then c.n else 0 end) as accepted
    from step_counts as c
    cross join positions as p
    where c.drafted >= p.position and c.accepted >= p.position - 1
    group by all
),

-- engine per-request records: accepted_per_position[i] = steps whose accepted count reached i+1, tau fixed
from_request_records as (
    select
        r.request_id as unit_id,
        p.position,
        case when p.position = 1 then r.verify_steps
             else r.accepted_per_position[p.position - 1] end as at_risk,
        r.accepted_per_position[p.position] as accepted
    from requests as r
    cross join positions as p
    where r.accepted_per_position is not null
      and r.verify_steps > 0
      and p.position <= least(r.tau, len(r.accepted_per_position))
      and r.request_id not in (select request_id from step_counts)
),

from_windows as (
    select
        'window:' || coalesce(w.file_id, '') || ':' || coalesce(cast(w.line as varchar), '') as unit_id,
        -1 - w.rowid as unit_key,  -- windows get negative keys, requests their row id
        w.deployment,
        p.position,
        case when p.position = 1 then w.verify_steps
             else w.accepted_per_position[p.position - 1] end as at_risk,
        w.accepted_per_position[p.position] as accepted
    from windows as w
    cross join positions as p
    where w.accepted_per_position is not null
      and w.verify_steps > 0
      and p.position <= least(coalesce(w.tau, len(w.accepted_per_position)), len(w.accepted_per_position))
      and w.deployment not in (select distinct deployment from requests)
),

final as (
    select u.unit_id, r.rowid as unit_key, r.deployment, u.position, u.at_risk, u.accepted
    from (select * from from_steps union all select * from from_request_records) as u
    join requests as r on r.request_id = u.unit_id
    union all
    select unit_id, unit_key, deployment, position, at_risk, accepted from from_windows
)

select * from final
where at_risk > 0
