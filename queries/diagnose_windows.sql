-- name: diagnose_windows
-- description: per deployment, tau and hour, the sufficient statistics of acceptance_rate from engine metric windows,
--   for deployments the store knows only from engine logs or metrics (no speculative request rows: those are
--   diagnosed from their requests in diagnose_segments). The unit of the ratio's variance is a 5-minute bucket of
--   windows (every engine and instance of the deployment summed): an engine window covers seconds of many requests,
--   and neighbouring windows share requests, so single windows would overstate the evidence. One source per
--   deployment (the one with the most windows), so that a deployment logged twice (a vLLM log and its Prometheus
--   scrapes) is not counted twice. Rows have diagnose_segments' shape: dimension 'deployment', value '*'; the
--   stratum is the 3-hour block of the day ('00', '03', .. '21'; '00 weekend' .. on Saturday and Sunday), so that
--   acceptance is compared within like hours (3 hours: sparse traffic still fills a stratum in a few days).
-- grain: one row per (deployment, tau, hour)
-- params: none
-- columns: deployment, tau, dimension, value, hour, source, n (5-minute buckets), accepted, drafted, aa, ad, dd
--   (acceptance sums: a = accepted, d = drafted per bucket), verify_steps (drafted / tau where not known),
--   output_tokens (generation throughput x seconds covered, where both are known), stratum (3-hour block of the day,
--   weekday or weekend)
with req as (
    select * from request_facts
),

traced as (
    -- deployments with speculative requests (diagnose_segments' traffic)
    select distinct deployment from req where tau > 0 and drafted > 0
),

gaps as (
    -- windows with both counts, speculation on and a known tau; not the first window of a counter series
    -- (from_samples without start_ts: everything counted since the process started, days of traffic in one bucket)
    select
        *,
        epoch(end_ts - lag(end_ts) over (partition by source, deployment, instance, engine order by end_ts)) as gap
    from windows
    where
        drafted > 0 and accepted is not null and tau > 0
        and not (from_samples and start_ts is null)
        and deployment not in (select t.deployment from traced as t)
),

counted as (
    -- seconds covered: start to end where printed; else (vLLM logs print only the end, and print no window for an
    -- interval without drafts) the process's logging interval (its most common gap), or the gap when shorter
    select
        * exclude (verify_steps, gap),
        coalesce(verify_steps, drafted / tau) as verify_steps,  -- each verify step drafts tau tokens
        coalesce(
            epoch(end_ts - start_ts),
            least(gap, mode(gap) over (partition by source, deployment, instance, engine))
        ) as seconds
    from gaps
),

chosen as (
    select deployment, source
    from counted
    group by deployment, source
    qualify row_number() over (partition by deployment order by count(*) desc, source) = 1
),

buckets as (
    select
        w.deployment,
        w.tau,
        w.source,
        time_bucket(interval 5 minute, w.end_ts) as bucket,
        sum(w.accepted)::double as a,
        sum(w.drafted)::double as d,
        sum(w.verify_steps) as verify_steps,
        sum(w.throughput_tokens_s * w.seconds) as output_tokens
    from counted as w
    semi join chosen as c on c.deployment = w.deployment and c.source = w.source
    group by w.deployment, w.tau, w.source, bucket
),

final as (
    select
        deployment,
        tau,
        'deployment' as dimension,
        '*' as value,
        date_trunc('hour', bucket) as hour,
        source,
        count(*) as n,
        sum(a) as accepted,
        sum(d) as drafted,
        sum(a * a) as aa,
        sum(a * d) as ad,
        sum(d * d) as dd,
        sum(verify_steps) as verify_steps,
        sum(output_tokens) as output_tokens,
        -- the 3-hour block of the day, on weekdays or at the weekend: acceptance is compared within like hours (the windows
        -- carry no task to stratify by, and a mix of tasks that follows the day and the week, code by day and chat
        -- by night or at the weekend, moves the pooled rate as a drop would)
        lpad((hour(date_trunc('hour', bucket)) // 3 * 3)::varchar, 2, '0') || if(isodow(date_trunc('hour', bucket)) >= 6, ' weekend', '') as stratum
    from buckets
    group by deployment, tau, source, hour
)

select * from final
order by deployment, tau, hour
