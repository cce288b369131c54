-- name: recommend_replay_drafts
-- description: Drafts replayed against one target (specdiag replay), measured: tokens per verify step, speedup as
--   target-only time over speculative time of the same prompts, and the cost ratio c = draft ms per drafted token
--   over target-only ms per emitted token. specdiag recommend ranks the drafts of each target by speedup.
-- grain: one row per (target, draft, tau)
-- params: none
-- columns: target, draft, tau, runs, prompts, mean_acceptance_length, acceptance_rate, speedup, cost_ratio
with totals as (
    select
        target,
        draft,
        tau,
        count(*) as runs,
        count(distinct prompt_id) as prompts,
        sum(steps) as steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted,
        sum(draft_ms) as draft_ms,
        sum(verify_ms) as verify_ms,
        sum(target_only_ms) as target_only_ms
    from replay_runs
    where target_only_ms is not null and draft_ms is not null and verify_ms is not null and steps > 0
    group by all
),

final as (
    select
        target,
        draft,
        tau,
        runs,
        prompts,
        1 + accepted / steps as mean_acceptance_length,
        accepted / nullif(drafted, 0) as acceptance_rate,
        target_only_ms / nullif(draft_ms + verify_ms, 0) as speedup,
        (draft_ms / nullif(drafted, 0)) / nullif(target_only_ms / (accepted + steps), 0) as cost_ratio
    from totals
)

select * from final order by target, speedup desc
