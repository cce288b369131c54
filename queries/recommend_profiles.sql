-- name: recommend_profiles
-- description: Cost model fitted from replay's measured forward passes (replay --profile-costs): target_ms against
--   n_tokens * batch_size by least squares, and the mean draft time per token; one row per target/draft pair.
-- grain: one row per (target, draft) pair
-- params: none
-- columns: target, draft, n_points, floor_ms, compute_ms, target_ms_mean, draft_ms_per_token,
--   created_at
with final as (
    select
        target,
        draft,
        count(*) as n_points,
        regr_intercept(target_ms, n_tokens * batch_size) as floor_ms,
        regr_slope(target_ms, n_tokens * batch_size) as compute_ms,
        avg(target_ms) as target_ms_mean,
        avg(draft_ms_per_token) as draft_ms_per_token,
        max(created_at) as created_at
    from cost_profiles
    group by all
)

select * from final order by target, draft
