-- name: diagnose_segments
-- description: per segment and hour, the sufficient statistics of request-clustered ratios (acceptance, quality,
--   shadow-match rate, decode ms per output token) of speculative traffic (tau > 0). diagnose reads it to find
--   change points and compare windows; every rate is sum(num) / sum(den) over requests. Series are per tau:
--   acceptance_rate falls mechanically with a larger tau, so it is only compared between requests of the same tau.
--   Each segment-hour is split by stratum (task x temperature bucket): diagnose compares acceptance within strata,
--   so that a change of traffic mix is not read as a change of acceptance; summed over strata the rows are the
--   segment's hourly totals.
-- grain: one row per (deployment, tau, dimension, value, hour, stratum); dimension 'deployment' (value '*') is the
--   whole deployment at that tau; stratum is 'task | temperature_bucket'
-- params: none
-- columns: deployment, tau, dimension, value, hour, stratum, n, accepted, drafted, aa, ad, dd (acceptance sums: a = accepted,
--   d = drafted per request), q_n, q_sum, q_sq (quality), s_n, s_sum (shadow_match as 0/1), t_n, tok, ms, tt, tm, mm
--   (decode ms per output token: d = output_tokens, a = decode_ms), verify_steps, output_tokens
with req as (
    select * from request_facts
),

spec as (
    select *, task || ' | ' || temperature_bucket as stratum from req where tau > 0 and drafted > 0
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
        stratum,
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
        (deployment, tau, hour, stratum),
        (deployment, tau, task, hour, stratum),
        (deployment, tau, target_model, hour, stratum),
        (deployment, tau, draft_model, hour, stratum),
        (deployment, tau, temperature_bucket, hour, stratum),
        (deployment, tau, batch_bucket, hour, stratum),
        (deployment, tau, prompt_length_bucket, hour, stratum)
    )
),

final as (
    select * from grouped
)

select * from final order by deployment, tau, dimension, value, hour, stratum
