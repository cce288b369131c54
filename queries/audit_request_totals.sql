-- name: audit_request_totals
-- description: Audit (must return zero rows): a request whose stored totals (verify_steps, drafted, accepted) differ from the sum of its steps.
-- grain: one row per (request, field) that disagrees; requests without steps or without stored totals are not checked
-- params: none
-- columns: request_id, field, stored, from_steps
with step_totals as (
    select
        request_id,
        count(*) filter (where drafted > 0) as verify_steps,
        sum(drafted) as drafted,
        sum(accepted) as accepted
    from steps
    group by request_id
),

compared as (
    select r.request_id, 'verify_steps' as field, r.verify_steps as stored, s.verify_steps as from_steps
    from requests as r
    inner join step_totals as s on s.request_id = r.request_id
    union all
    select r.request_id, 'drafted' as field, r.drafted as stored, s.drafted as from_steps
    from requests as r
    inner join step_totals as s on s.request_id = r.request_id
    union all
    select r.request_id, 'accepted' as field, r.accepted as stored, s.accepted as from_steps
    from requests as r
    inner join step_totals as s on s.request_id = r.request_id
),

final as (
    select request_id, field, stored::bigint as stored, from_steps::bigint as from_steps
    from compared
    where stored is not null and stored != from_steps
    order by request_id, field
)

select * from final
