-- name: recommend_threshold
-- description: Confidence-threshold stop evaluated on logged steps with draft probabilities: the draft stops before
--   the first token whose own probability q falls below the threshold, so a step keeps k = tokens drafted before
--   that point and accepts least(accepted, k). Threshold 0 is the logged fixed-tau policy. Steps cannot be extended
--   beyond what was logged (drafted), so the policy is capped at the logged tau. Seeing the low q of token k + 1
--   takes the draft pass that produced it: a step that stops early pays least(k + 1, drafted) draft passes
--   (draft_passes), though it verifies only k tokens.
-- grain: one row per deployment and threshold
-- params: none
-- columns: deployment, threshold, steps, drafted, draft_passes, accepted, tokens_in_flight, emitted_in_flight
with logged as (
    select
        r.deployment,
        s.drafted,
        s.accepted,
        s.draft_probs,
        cast(coalesce(s.batch_size, r.batch_size, 1) as double) as batch_size
    from steps as s
    join requests as r on r.request_id = s.request_id
    where s.drafted > 0 and s.draft_probs is not null and len(s.draft_probs) >= s.drafted
),

thresholds as (
    select unnest(range(0, 10)) / 10.0 as threshold
),

kept as (
    select
        l.deployment,
        t.threshold,
        l.accepted,
        l.batch_size,
        l.drafted as logged,
        coalesce(list_position(list_transform(l.draft_probs[1:l.drafted], lambda q: q < t.threshold), true) - 1,
                 l.drafted) as k
    from logged as l
    cross join thresholds as t
),

final as (
    select
        deployment,
        threshold,
        count(*) as steps,
        sum(k) as drafted,
        sum(least(k + 1, logged)) as draft_passes,  -- the pass that showed q < threshold is paid for too
        sum(least(accepted, k)) as accepted,
        sum((k + 1) * batch_size) as tokens_in_flight,        -- sum of n * B over verify passes
        sum((least(accepted, k) + 1) * batch_size) as emitted_in_flight  -- tokens emitted, times their B
    from kept
    group by all
)

select * from final order by deployment, threshold
