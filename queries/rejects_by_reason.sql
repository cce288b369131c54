-- name: rejects_by_reason
-- description: Quarantined input lines per file and reason code, with the first line number as an example.
-- grain: one row per (path, reason)
-- params: reason (varchar, default null = all): restrict to one reason code
-- columns: path, reason, rejected, first_line, first_detail
with params as (
    select getvariable('reason')::varchar as reason
),

filtered as (
    select r.path, r.reason, r.line, r.detail
    from rejects as r
    cross join params as p
    where p.reason is null or r.reason = p.reason
),

final as (
    select
        path,
        reason,
        count(*) as rejected,
        min(line) as first_line,
        arg_min(detail, line) as first_detail
    from filtered
    group by path, reason
    order by rejected desc, path, reason
)

select * from final
