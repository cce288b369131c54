-- name: recommend_costs
-- description: Least-squares fit of the cost model t_verify(n, B) = floor_ms + compute_ms * n * B over every timed
--   step, where n = drafted + 1 tokens verified per sequence and B the batch size of the step. tau = 0 control
--   traffic (drafted = 0, one target token) is included: it pins the floor. Draft cost is per drafted token.
--   Steps are first reduced to sufficient statistics per (request, drafted, batch size), where x = n * B is fixed,
--   so the regression runs over a few rows per request: slope = cov(x, y) / var(x) from the sums.
-- grain: one row per deployment (by_draft = false), plus one per (deployment, draft_model) (by_draft = true)
-- params: none
-- columns: deployment, draft_model, by_draft, n_steps, n_points, x_mean, floor_ms, compute_ms, r2, verify_ms_mean,
--   draft_ms_per_token, drafted, control_steps, batch_mean, batch_min, batch_max
with per_request as (
    select
        s.request_id,
        s.drafted,
        s.batch_size,
        count(*) as n,
        sum(s.verify_ms) as sy,
        sum(s.verify_ms * s.verify_ms) as syy,
        sum(s.draft_ms) as draft_ms,
        sum(s.drafted) filter (where s.draft_ms is not null) as drafted_timed
    from steps as s
    where s.verify_ms is not null and s.verify_ms >= 0
    group by all
),

points as (
    select
        r.deployment,
        r.draft_model,
        p.drafted,
        cast(coalesce(p.batch_size, r.batch_size, 1) as double) as batch_size,
        (p.drafted + 1) * cast(coalesce(p.batch_size, r.batch_size, 1) as double) as x,  -- tokens in flight
        p.n,
        p.sy,
        p.syy,
        p.draft_ms,
        p.drafted_timed
    from per_request as p
    join requests as r on r.request_id = p.request_id
),

sums as (
    select
        deployment,
        draft_model,
        grouping(draft_model) = 0 as by_draft,
        sum(n) as n_steps,
        count(distinct x) as n_points,
        sum(n * x) / sum(n) as x_mean,
        sum(sy) / sum(n) as y_mean,
        -- centred second moments from the sums (x is constant within a row)
        sum(n * x * x) / sum(n) - power(sum(n * x) / sum(n), 2) as var_x,
        sum(x * sy) / sum(n) - (sum(n * x) / sum(n)) * (sum(sy) / sum(n)) as cov_xy,
        sum(syy) / sum(n) - power(sum(sy) / sum(n), 2) as var_y,
        sum(draft_ms) filter (where drafted > 0) / nullif(sum(drafted_timed) filter (where drafted > 0), 0)
            as draft_ms_per_token,
        sum(n * drafted) as drafted,
        sum(n) filter (where drafted = 0) as control_steps,
        sum(n * batch_size) filter (where drafted > 0) / nullif(sum(n) filter (where drafted > 0), 0) as batch_mean,
        min(batch_size) as batch_min,
        max(batch_size) as batch_max
    from points
    group by grouping sets ((deployment), (deployment, draft_model))
),

final as (
    select
        deployment,
        draft_model,
        by_draft,
        n_steps,
        n_points,
        x_mean,
        case when n_points > 1 then y_mean - cov_xy / var_x * x_mean end as floor_ms,
        case when n_points > 1 then cov_xy / var_x end as compute_ms,
        case when n_points > 1 and var_y > 0 then cov_xy * cov_xy / (var_x * var_y) end as r2,
        y_mean as verify_ms_mean,
        draft_ms_per_token,
        drafted,
        coalesce(control_steps, 0) as control_steps,
        batch_mean,
        batch_min,
        batch_max
    from sums
)

select * from final order by deployment, by_draft, draft_model
