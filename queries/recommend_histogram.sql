-- name: recommend_histogram
-- description: The one pass over the steps behind `specdiag recommend`: per unit (request, or engine window), how
--   many steps drafted d tokens and accepted a of them at batch size B, with the verify and draft time sums of those
--   steps. specdiag.recommend derives from it the censored acceptance counts (a step tried positions
--   1..min(a + 1, d) and accepted 1..a; a = d is right-censored at d), the per-request sufficient statistics of the
--   cost fit (x = (d + 1) * B is constant within a row) and the batch sizes, without scanning the steps again.
--   Requests logged without steps but with engine per-position counts, and engine windows of deployments that have
--   no request records, become the same histogram (no times, no batch size): with a fixed tau,
--   accepted_per_position[k] counts the steps that accepted at least k tokens. tau = 0 steps (d = 0) are kept: they
--   pin the floor of the cost fit.
-- grain: one row per unit, drafted, accepted and batch size
-- params: with_windows (boolean, default null = true): false leaves the engine windows out (recommend does when no
--   --cost is given: a deployment known only from engine windows has no timings, so it is skipped for its costs,
--   and its windows, millions in a month of scrapes, would be loaded for nothing)
-- columns: unit_id, unit_key, deployment, drafted, accepted, batch_size, steps, timed_steps, verify_ms,
--   verify_ms_sq, draft_ms, drafted_timed
with timed as (
    -- y: verify ms of a timed step (verify_ms >= 0), which feeds the cost fit; dm: its draft ms when logged
    select
        s.request_id,
        s.drafted,
        s.accepted,
        s.batch_size,
        case when s.verify_ms >= 0 then s.verify_ms end as y,
        case when s.verify_ms >= 0 then s.draft_ms end as dm
    from steps as s
),

step_groups as materialized (
    select
        request_id,
        drafted,
        accepted,
        batch_size,
        count(*) as steps,
        count(y) as timed_steps,
        sum(y) as verify_ms,
        sum(y * y) as verify_ms_sq,
        sum(dm) as draft_ms,
        drafted * count(dm) as drafted_timed  -- draft tokens whose draft time is logged
    from timed
    group by request_id, drafted, accepted, batch_size
),

from_steps as (
    select
        g.request_id as unit_id,
        r.rowid as unit_key,
        r.deployment,
        g.drafted,
        g.accepted,
        coalesce(g.batch_size, r.batch_size) as batch_size,
        g.steps,
        g.timed_steps,
        g.verify_ms,
        g.verify_ms_sq,
        g.draft_ms,
        g.drafted_timed
    from step_groups as g
    join requests as r on r.request_id = g.request_id
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
      and not exists (select 1 from step_groups as g where g.request_id = r.request_id and g.drafted > 0)
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
      and coalesce(getvariable('with_windows')::boolean, true)
),

from_records as (
    select
        c.unit_id,
        c.unit_key,
        c.deployment,
        c.drafted,
        k.accepted,
        cast(null as integer) as batch_size,
        case
            when k.accepted = 0 then c.verify_steps - c.apc[1]
            when k.accepted = c.drafted then c.apc[k.accepted]
            else c.apc[k.accepted] - c.apc[k.accepted + 1]
        end as steps,
        0 as timed_steps,
        cast(null as double) as verify_ms,
        cast(null as double) as verify_ms_sq,
        cast(null as double) as draft_ms,
        cast(null as bigint) as drafted_timed
    from records as c
    cross join lateral (select unnest(range(0, c.drafted + 1)) as accepted) as k
    where c.drafted > 0
),

final as (
    select * from from_steps
    union all
    select * from from_records
)

select * from final
where steps > 0
