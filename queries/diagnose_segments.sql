-- name: diagnose_segments
-- description: per segment and hour, the sufficient statistics of request-clustered ratios (acceptance, quality,
--   shadow-match rate, decode ms per output token) of speculative traffic (tau > 0). diagnose reads it to find
--   change points and compare windows; every rate is sum(num) / sum(den) over requests. Series are per tau:
--   acceptance_rate falls mechanically with a larger tau, so it is only compared between requests of the same tau.
-- grain: one row per (deployment, tau, dimension, value, hour); dimension 'deployment' (value '*') is the whole
--   deployment at that tau
-- params: none
-- columns: deployment, tau, dimension, value, hour, n, accepted, drafted, aa, ad, dd (acceptance sums: a = accepted,
--   d = drafted per request), q_n, q_sum, q_sq (quality), s_n, s_sum (shadow_match as 0/1), t_n, tok, ms, tt, tm, mm
--   (decode ms per output token: d = output_tokens, a = decode_ms), verify_steps, output_tokens
with step_totals as (
    -- requests stored without totals (trace lines without them): sum their steps
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        count(*) as decode_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted,
        sum(draft_ms) as draft_ms,
        sum(verify_ms) as verify_ms
    from steps
    where request_id in (select request_id from requests where drafted is null)
    group by request_id
),

req as (
    -- one row per request with its totals and the segment buckets diagnose compares
    select
        r.request_id,
        r.ts,
        date_trunc('hour', r.ts) as hour,
        r.deployment,
        coalesce(r.task, 'unknown') as task,
        coalesce(r.target_model, 'unknown') as target_model,
        coalesce(r.draft_model, 'unknown') as draft_model,
        coalesce(r.tau, 0) as tau,
        r.temperature,
        r.top_p,
        r.acceptance,
        r.quality,
        r.shadow_match,
        r.batch_size,
        r.prompt,
        r.prompt_tokens,
        r.output_tokens,
        coalesce(r.drafted, s.drafted, 0) as drafted,
        coalesce(r.accepted, s.accepted, 0) as accepted,
        coalesce(r.verify_steps, s.verify_steps, 0) as verify_steps,
        coalesce(r.draft_ms, s.draft_ms) as draft_ms,
        coalesce(r.verify_ms, s.verify_ms) as verify_ms,
        -- decode time of the request in ms: the step timings when logged, else latency after the first token
        coalesce(
            coalesce(r.draft_ms, s.draft_ms, 0) + coalesce(r.verify_ms, s.verify_ms),
            r.latency_ms - coalesce(r.ttft_ms, 0)
        ) as decode_ms,
        case
            when r.temperature is null then 'unknown'
            when r.temperature = 0 then '0'
            when r.temperature <= 0.5 then '(0,0.5]'
            when r.temperature <= 1.0 then '(0.5,1]'
            else '>1'
        end as temperature_bucket,
        case
            when r.batch_size is null then 'unknown'
            when r.batch_size <= 8 then '1-8'
            when r.batch_size <= 32 then '9-32'
            when r.batch_size <= 128 then '33-128'
            else '>128'
        end as batch_bucket,
        case
            when r.prompt_tokens is null then 'unknown'
            when r.prompt_tokens < 256 then '<256'
            when r.prompt_tokens < 1024 then '256-1023'
            when r.prompt_tokens < 4096 then '1024-4095'
            else '>=4096'
        end as prompt_length_bucket
    from requests as r
    left join step_totals as s on s.request_id = r.request_id
),

spec as (
    select * from req where tau > 0 and drafted > 0
),

grouped as (
    select
        deployment,
        tau,
        case
            when grouping(task) = 0 then 'task'
            when grouping(target_model) = 0 then 'target_model'
            when grouping(draft_model) = 0 then 'draft_model'
            when grouping(temperature_bucket) = 0 then 'temperature_bucket'
            when grouping(batch_bucket) = 0 then 'batch_bucket'
            when grouping(prompt_length_bucket) = 0 then 'prompt_length_bucket'
            else 'deployment'
        end as dimension,
        coalesce(task, target_model, draft_model, temperature_bucket, batch_bucket, prompt_length_bucket, '*')
            as value,
        hour,
        count(*) as n,
        sum(accepted)::double as accepted,
        sum(drafted)::double as drafted,
        sum(accepted::double * accepted) as aa,
        sum(accepted::double * drafted) as ad,
        sum(drafted::double * drafted) as dd,
        count(quality) as q_n,
        sum(quality) as q_sum,
        sum(quality * quality) as q_sq,
        count(shadow_match) as s_n,
        sum(shadow_match::int)::double as s_sum,
        count(*) filter (where decode_ms is not null and output_tokens > 0) as t_n,
        sum(output_tokens::double) filter (where decode_ms is not null and output_tokens > 0) as tok,
        sum(decode_ms) filter (where decode_ms is not null and output_tokens > 0) as ms,
        sum(output_tokens::double * output_tokens) filter (where decode_ms is not null and output_tokens > 0) as tt,
        sum(decode_ms * output_tokens) filter (where decode_ms is not null and output_tokens > 0) as tm,
        sum(decode_ms * decode_ms) filter (where decode_ms is not null and output_tokens > 0) as mm,
        sum(verify_steps)::double as verify_steps,
        sum(output_tokens)::double as output_tokens
    from spec
    group by grouping sets (
        (deployment, tau, hour),
        (deployment, tau, task, hour),
        (deployment, tau, target_model, hour),
        (deployment, tau, draft_model, hour),
        (deployment, tau, temperature_bucket, hour),
        (deployment, tau, batch_bucket, hour),
        (deployment, tau, prompt_length_bucket, hour)
    )
),

final as (
    select * from grouped
)

select * from final order by deployment, tau, dimension, value, hour
