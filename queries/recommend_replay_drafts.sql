-- name: recommend_replay_drafts
-- description: Drafts replayed against one target (specdiag replay), measured: tokens per verify step, speedup as
--   target-only time over speculative time of the same prompts, and the cost ratio c = draft ms per drafted token
--   over target-only ms per emitted token. specdiag recommend ranks the drafts of each target by speedup. Only
--   lossless runs count (strict and rejection acceptance: a typical run accepts more than the target would emit).
-- grain: one row per (target, draft, tau)
-- params: none
-- columns: target, draft, tau, runs, prompts, mean_acceptance_length, acceptance_rate, speedup, cost_ratio
with verify_steps as (
    -- steps that drafted something (a last step cut short by the token limit drafts nothing)
    select run_id, prompt_id, count(*) filter (where drafted > 0) as verify_steps
    from replay_steps
    group by all
),

totals as (
    select
        r.target,
        r.draft,
        r.tau,
        count(distinct r.run_id) as runs,
        count(distinct r.prompt_id) as prompts,
        sum(r.steps) as steps,
        sum(coalesce(v.verify_steps, r.steps)) as verify_steps,  -- runs stored without their steps: all
        sum(r.drafted) as drafted,
        sum(r.accepted) as accepted,
        sum(r.draft_ms) as draft_ms,
        sum(r.verify_ms) as verify_ms,
        sum(r.target_only_ms) as target_only_ms
    from replay_runs as r
    left join verify_steps as v using (run_id, prompt_id)
    where r.target_only_ms is not null and r.draft_ms is not null and r.verify_ms is not null and r.steps > 0
        and r.acceptance is distinct from 'typical'
    group by all
),

final as (
    select
        target,
        draft,
        tau,
        runs,
        prompts,
        1 + accepted / nullif(verify_steps, 0) as mean_acceptance_length,
        accepted / nullif(drafted, 0) as acceptance_rate,
        target_only_ms / nullif(draft_ms + verify_ms, 0) as speedup,
        (draft_ms / nullif(drafted, 0)) / nullif(target_only_ms / (accepted + steps), 0) as cost_ratio
    from totals
)

select * from final order by target, speedup desc
