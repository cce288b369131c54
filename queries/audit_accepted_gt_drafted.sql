-- name: audit_accepted_gt_drafted
-- description: Audit (must return zero rows): counts out of range, accepted > drafted or negative, in steps, requests and windows.
-- grain: one row per offending step, request or window
-- params: none
-- columns: table_name, id, drafted, accepted
with bad_steps as (
    select
        'steps' as table_name,
        request_id || '#' || step as id,
        drafted::bigint as drafted,
        accepted::bigint as accepted
    from steps
    where accepted > drafted or accepted < 0 or drafted < 0
),

bad_requests as (
    select 'requests' as table_name, request_id as id, drafted, accepted
    from requests
    where accepted > drafted or accepted < 0 or drafted < 0
),

bad_windows as (
    select
        'windows' as table_name,
        source || '/' || deployment || '/' || coalesce(engine, '') || '@' || end_ts::varchar as id,
        drafted,
        accepted
    from windows
    where accepted > drafted or accepted < 0 or drafted < 0
),

final as (
    select * from bad_steps
    union all
    select * from bad_requests
    union all
    select * from bad_windows
)

select * from final
