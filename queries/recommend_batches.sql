-- name: recommend_batches
-- description: Batch sizes seen by speculative steps, for the tau-per-batch-size table of `specdiag recommend`.
-- grain: one row per deployment and batch size
-- params: none
-- columns: deployment, batch_size, steps
with final as (
    select
        r.deployment,
        coalesce(s.batch_size, r.batch_size) as batch_size,
        count(*) as steps
    from steps as s
    join requests as r on r.request_id = s.request_id
    where s.drafted > 0 and coalesce(s.batch_size, r.batch_size) is not null
    group by all
)

select * from final order by deployment, batch_size
