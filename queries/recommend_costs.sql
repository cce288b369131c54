-- name: recommend_costs
-- description: Sufficient statistics to fit the cost model t_verify(n, B) = floor_ms + compute_ms * n * B by least
--   squares, where n = drafted + 1 tokens verified per sequence and B the batch size of the step. tau = 0 control
--   traffic (drafted = 0, one target token) is included: it pins the floor. Draft cost is per drafted token.
-- grain: one row per deployment (by_draft = false), plus one per (deployment, draft_model) (by_draft = true)
-- params: none
-- columns: deployment, draft_model, by_draft, n_steps, n_points, x_mean, floor_ms, compute_ms, r2, verify_ms_mean,
--   draft_ms_per_token, drafted,
--   control_steps, batch_mean, batch_min, batch_max
with timed as (
    select
        r.deployment,
        r.draft_model,
        s.drafted,
        s.draft_ms,
        s.verify_ms,
        cast(coalesce(s.batch_size, r.batch_size, 1) as double) as batch_size,
        (s.drafted + 1) * cast(coalesce(s.batch_size, r.batch_size, 1) as double) as tokens_in_flight
    from steps as s
    join requests as r on r.request_id = s.request_id
    where s.verify_ms is not null and s.verify_ms >= 0
),

final as (
    select
        deployment,
        draft_model,
        grouping(draft_model) = 0 as by_draft,
        count(*) as n_steps,
        count(distinct tokens_in_flight) as n_points,
        avg(tokens_in_flight) as x_mean,
        regr_intercept(verify_ms, tokens_in_flight) as floor_ms,
        regr_slope(verify_ms, tokens_in_flight) as compute_ms,
        regr_r2(verify_ms, tokens_in_flight) as r2,
        avg(verify_ms) as verify_ms_mean,
        sum(draft_ms) filter (where drafted > 0 and draft_ms is not null)
            / nullif(sum(drafted) filter (where drafted > 0 and draft_ms is not null), 0) as draft_ms_per_token,
        sum(drafted) as drafted,
        count(*) filter (where drafted = 0) as control_steps,
        avg(batch_size) filter (where drafted > 0) as batch_mean,
        min(batch_size) as batch_min,
        max(batch_size) as batch_max
    from timed
    group by grouping sets ((deployment), (deployment, draft_model))
)

select * from final order by deployment, by_draft, draft_model
