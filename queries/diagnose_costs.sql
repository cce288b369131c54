-- name: diagnose_costs
-- description: per deployment, batch-size bucket and tau: acceptance, decode speed (ms per output token) and step
--   costs of the requests, with the sufficient statistics of request-clustered ratios; plus, repeated on every row of
--   a deployment, the least-squares fit of verify ms per step against tokens in flight, n x B (n = tau + 1 tokens
--   scored per sequence, B = batch size; tau = 0 control decode steps have n = 1): t_verify = floor + compute * n * B.
-- grain: one row per (deployment, batch_bucket, tau)
-- params: none
-- columns: deployment, batch_bucket, tau, n, accepted, drafted, aa, ad, dd, verify_steps, t_n, tok, ms, tt, tm,
--   mm (decode ms per output token sums), draft_ms, verify_ms, mean_batch_size, fit_n, fit_floor_ms,
--   fit_compute_ms, fit_compute_se, fit_r2, fit_mean_x, draft_ms_per_token, current_tau (the most common tau of
--   the deployment's speculative requests in its last day of traffic: the configuration it runs now)
with req as (
    select * from request_facts
),

per_step as (
    -- verify (or plain decode) ms per target forward pass of each request, and that pass's tokens in flight n x B
    select
        deployment,
        verify_ms / (case when tau > 0 then verify_steps else output_tokens end) as y,
        (tau + 1)::double * batch_size as x
    from req
    where
        verify_ms is not null
        and batch_size is not null
        and (case when tau > 0 then verify_steps else output_tokens end) > 0
),

fit as (
    select
        deployment,
        regr_count(y, x) as fit_n,
        regr_intercept(y, x) as fit_floor_ms,
        regr_slope(y, x) as fit_compute_ms,
        -- slope standard error: sqrt(residual variance / Sxx)
        sqrt(
            greatest(regr_syy(y, x) - regr_sxy(y, x) ^ 2 / nullif(regr_sxx(y, x), 0), 0)
            / nullif(greatest(regr_count(y, x)::bigint - 2, 0), 0)  -- regr_count is unsigned: 1 - 2 overflows
            / nullif(regr_sxx(y, x), 0)
        ) as fit_compute_se,
        regr_r2(y, x) as fit_r2,
        regr_avgx(y, x) as fit_mean_x
    from per_step
    group by deployment
),

draft_cost as (
    select deployment, sum(draft_ms) / nullif(sum(drafted), 0) as draft_ms_per_token
    from req
    where tau > 0 and draft_ms is not null
    group by deployment
),

latest as (
    -- the tau the deployment runs now: a planned tau change mid-range is not judged by the tau it left
    select deployment, mode(tau) as current_tau
    from (
        select deployment, tau, ts, max(ts) over (partition by deployment) as last_ts
        from req
        where tau > 0 and drafted > 0
    )
    where ts >= last_ts - interval 1 day
    group by deployment
),

cells as (
    select
        deployment,
        batch_bucket,
        tau,
        count(*) as n,
        sum(accepted)::double as accepted,
        sum(drafted)::double as drafted,
        sum(accepted::double * accepted) as aa,
        sum(accepted::double * drafted) as ad,
        sum(drafted::double * drafted) as dd,
        sum(verify_steps)::double as verify_steps,
        count(*) filter (where decode_ms is not null and output_tokens > 0) as t_n,
        sum(output_tokens::double) filter (where decode_ms is not null and output_tokens > 0) as tok,
        sum(decode_ms) filter (where decode_ms is not null and output_tokens > 0) as ms,
        sum(output_tokens::double * output_tokens) filter (where decode_ms is not null and output_tokens > 0) as tt,
        sum(decode_ms * output_tokens) filter (where decode_ms is not null and output_tokens > 0) as tm,
        sum(decode_ms * decode_ms) filter (where decode_ms is not null and output_tokens > 0) as mm,
        sum(draft_ms) as draft_ms,
        sum(verify_ms) as verify_ms,
        avg(batch_size) as mean_batch_size
    from req
    group by deployment, batch_bucket, tau
),

final as (
    select c.*, f.* exclude (deployment), dc.draft_ms_per_token, l.current_tau
    from cells as c
    left join fit as f on f.deployment = c.deployment
    left join draft_cost as dc on dc.deployment = c.deployment
    left join latest as l on l.deployment = c.deployment
)

select * from final order by deployment, batch_bucket, tau
