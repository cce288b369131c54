-- name: audit_ledger_accounting
-- description: Audit (must return zero rows): a ledger row whose counts disagree with the rows stored for its file, lines that do not add up (lines = stored_lines + duplicates + blank + rejected + other_lines), or rows whose file has no ledger row.
-- grain: one row per (file_id, problem)
-- params: none
-- columns: file_id, path, problem, ledger_value, actual_value
with stored as (
    select
        l.file_id,
        l.path,
        l.lines,
        l.requests,
        l.windows,
        l.rejected,
        l.stored_lines + l.duplicates + l.blank + l.rejected + l.other_lines as accounted_lines,
        (select count(*) from requests as r where r.file_id = l.file_id) as actual_requests,
        (select count(*) from windows as w where w.file_id = l.file_id) as actual_windows,
        (select count(*) from rejects as j where j.file_id = l.file_id) as actual_rejected
    from ingest_ledger as l
),

mismatches as (
    select file_id, path, 'requests' as problem, requests as ledger_value, actual_requests as actual_value
    from stored where requests != actual_requests
    union all
    select file_id, path, 'windows' as problem, windows as ledger_value, actual_windows as actual_value
    from stored where windows != actual_windows
    union all
    select file_id, path, 'rejected' as problem, rejected as ledger_value, actual_rejected as actual_value
    from stored where rejected != actual_rejected
    union all
    -- every line lands in exactly one place: stored, a duplicate, blank, rejected, or another (engine) line
    select file_id, path, 'lines' as problem, lines as ledger_value, accounted_lines as actual_value
    from stored
    where lines != accounted_lines
),

orphans as (
    select file_id, null as path, 'requests without ledger row' as problem, null as ledger_value, count(*) as actual_value
    from requests
    where file_id is not null and file_id not in (select file_id from ingest_ledger)
    group by file_id
    union all
    select file_id, null as path, 'windows without ledger row' as problem, null as ledger_value, count(*) as actual_value
    from windows
    where file_id is not null and file_id not in (select file_id from ingest_ledger)
    group by file_id
),

final as (
    select file_id, path, problem, ledger_value::bigint as ledger_value, actual_value::bigint as actual_value
    from mismatches
    union all
    select file_id, path, problem, ledger_value::bigint as ledger_value, actual_value::bigint as actual_value
    from orphans
)

select * from final
