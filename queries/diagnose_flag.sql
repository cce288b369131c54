-- name: diagnose_flag
-- description: the requests of one deployment with their configuration, buckets and per-request rates; flag picks
--   the worst and the typical ones of a finding's segment from it.
-- grain: one row per request of the deployment
-- params: deployment (varchar): the deployment whose requests are listed
-- columns: request_id, ts, deployment, task, target_model, draft_model, tau, temperature, top_p, acceptance,
--   temperature_bucket, batch_bucket, prompt_length_bucket, prompt, prompt_tokens, quality, shadow_match,
--   drafted, accepted, acceptance_rate, ms_per_token
with req as (
    select * from request_facts
),

final as (
    select
        request_id,
        ts,
        deployment,
        task,
        target_model,
        draft_model,
        tau,
        temperature,
        top_p,
        acceptance,
        temperature_bucket,
        batch_bucket,
        prompt_length_bucket,
        prompt,
        prompt_tokens,
        quality,
        shadow_match,
        drafted,
        accepted,
        accepted::double / nullif(drafted, 0) as acceptance_rate,
        decode_ms / nullif(output_tokens, 0) as ms_per_token
    from req
    where deployment = getvariable('deployment')
)

select * from final order by ts, request_id
