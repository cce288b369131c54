-- name: latency_breakdown
-- description: Draft and verify milliseconds per emitted token by batch-size bucket, from trace steps with timings.
-- grain: one row per (deployment, tau, batch_bucket); batch_bucket is the power-of-two lower bound of the batch size (1, 2, 4, 8, ...), null when unknown
-- params: deployment (varchar, default null = all): restrict to one deployment
-- columns: deployment, tau, batch_bucket, steps, emitted_tokens, tokens_per_step, draft_ms_per_token, verify_ms_per_token, step_ms_per_token, draft_share
with params as (
    select getvariable('deployment')::varchar as deployment
),

timed_steps as (
    -- a step emits accepted + 1 tokens (the accepted prefix and the target's own token)
    select
        r.deployment,
        r.tau,
        coalesce(s.batch_size, r.batch_size) as batch_size,
        s.accepted + 1 as emitted,
        coalesce(s.draft_ms, 0) as draft_ms,
        s.verify_ms
    from steps as s
    inner join requests as r on r.request_id = s.request_id
    cross join params as p
    where s.verify_ms is not null and (p.deployment is null or r.deployment = p.deployment)
),

bucketed as (
    select
        *,
        case when batch_size >= 1 then (2 ** floor(log2(batch_size)))::integer end as batch_bucket
    from timed_steps
),

final as (
    select
        deployment,
        tau,
        batch_bucket,
        count(*) as steps,
        sum(emitted)::bigint as emitted_tokens,
        sum(emitted) / count(*) as tokens_per_step,
        sum(draft_ms) / sum(emitted) as draft_ms_per_token,
        sum(verify_ms) / sum(emitted) as verify_ms_per_token,
        (sum(draft_ms) + sum(verify_ms)) / sum(emitted) as step_ms_per_token,
        sum(draft_ms) / nullif(sum(draft_ms) + sum(verify_ms), 0) as draft_share
    from bucketed
    group by deployment, tau, batch_bucket
    order by deployment, tau, batch_bucket nulls last
)

select * from final
