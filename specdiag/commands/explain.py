"""`specdiag explain REQUEST_ID` / `--worst N --deployment NAME`: one request's trace read the way an expert would."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Group
from rich.table import Table
from rich.text import Text

from specdiag.commands.query import print_table
from specdiag.errors import UsageError
from specdiag.explain import explain_request, worst_requests
from specdiag.options import db_option, json_option
from specdiag.output import emit_json, plain
from specdiag.store import connect


@click.command("explain")
@click.argument("request_id", required=False)
@click.option("--worst", type=int, default=None, help="Explain the N slowest requests of --deployment.")
@click.option("--deployment", default=None, help="Deployment for --worst.")
@db_option
@json_option
def explain(
    request_id: str | None, worst: int | None, deployment: str | None, db: str | None, as_json: bool
) -> None:
    """Where one request's time went, its bottleneck, and its cost at the best tau and with speculation off."""
    if (request_id is None) == (worst is None):
        raise UsageError("give a REQUEST_ID or --worst N --deployment NAME")
    if worst is not None and not deployment:
        raise UsageError("--worst needs --deployment NAME")
    con = connect(db, read_only=True)
    try:
        ids = [request_id] if request_id is not None else worst_requests(con, str(deployment), worst or 0)
        fits: dict[str, Any] = {}  # one cost fit per deployment
        results = [explain_request(con, rid, fits) for rid in ids]
    finally:
        con.close()
    if as_json:
        emit_json(results[0] if request_id is not None else {"requests": results})
    elif request_id is not None:
        _render_one(results[0])
    else:
        _render_worst(results)


def _f(value: Any, fmt: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:{fmt}}{suffix}"
    return f"{value}{suffix}"


def _sum(*values: float | None) -> float | None:
    return None if all(v is None for v in values) else sum(v or 0.0 for v in values)


def _render_one(e: dict[str, Any]) -> None:
    r, t = e["request"], e["totals"]
    header = plain(
        f"{r['request_id']}  {r['deployment']}  tau {r['tau']}  batch {r['batch_size']:g}  "
        f"{r['target_model'] or '?'} <- {r['draft_model'] or '?'}  task {r['task'] or '-'}"
    )
    table = Table(title=None, box=None, pad_edge=False)
    for name in ("step", "drafted", "accepted", "emitted", "draft ms", "verify ms", "batch"):
        table.add_column(name, justify="right")
    for row in e["step_table"]:
        label = str(row["first_step"])
        if row["count"] > 1:
            label = f"{row['first_step']}-{row['last_step']} ({row['count']}x, mean)"
        table.add_row(
            label,
            _f(row["drafted"], ".1f") if row["count"] > 1 else _f(int(row["drafted"])),
            _f(row["accepted"], ".1f") if row["count"] > 1 else _f(int(row["accepted"])),
            _f(row["emitted"], ".1f") if row["count"] > 1 else _f(int(row["emitted"])),
            _f(row["draft_ms"]),
            _f(row["verify_ms"]),
            _f(row["batch_size"], "g"),
        )
    c = e["control"]
    lines = [
        f"totals: {t['steps']} steps, {t['emitted_tokens']} tokens, {_f(t['mean_acceptance_length'])} tokens per "
        f"verify step, acceptance rate {_f(t['acceptance_rate'])}, alpha {_f(e['alpha'])}",
        f"time: latency {_f(t['latency_ms'], '.0f', ' ms')} = drafting {_f(t['draft_share'], '.0%')} + verifying "
        f"{_f(t['verify_share'], '.0%')} + outside {_f(t['outside_share'], '.0%')}"
        if t["latency_ms"] is not None
        else f"time (no latency logged): steps {_f(_sum(t['draft_ms'], t['verify_ms']), '.0f', ' ms')} = drafting "
        f"{_f(t['draft_share'], '.0%')} + verifying {_f(t['verify_share'], '.0%')}",
        f"per token: {_f(t['decode_ms_per_token'])} ms decode vs {_f(c['ms_per_token'])} ms for tau = 0 control "
        f"({c['steps']} steps, batch {_f(c['batch_min'])}-{_f(c['batch_max'])}"
        f"{'' if c['batch_matched'] else ', not batch-matched'}): {_f(t['observed_speedup'])}x"
        if c["steps"]
        else f"per token: {_f(t['decode_ms_per_token'])} ms decode; no tau = 0 control traffic to compare with",
    ]
    v = e["verdict"]
    verdict = Text.assemble(("verdict: ", "bold"), (v["kind"], "bold red"), plain(f"  {v['summary']}"))
    also = [plain(f"  also {a['kind']}: {a['summary']}") for a in e["also"]]
    w = e["what_if"]
    what_if = []
    if w is not None:
        for key, label in (
            ("current", "as run"),
            ("recommended", "recommended"),
            ("speculation_off", "spec off"),
        ):
            s = w[key]
            what_if.append(
                f"  {label:<12} tau {s['tau']:>2}: decode {s['decode_ms']:.0f} ms, "
                f"latency {_f(s['latency_ms'], '.0f', ' ms')}, "
                f"{s['speedup']:.2f}x vs target alone"
            )
    rejected = e["rejected_tokens"]
    reject_lines = [
        f"  step {x['step']} pos {x['position']}: token {x['token_id']}"
        f"{'' if not x.get('token_text') else ' ' + repr(x['token_text'])}  q {_f(x['q'], '.3f')}  p {_f(x['p'], '.3f')}"
        for x in rejected[:6]
    ]
    if len(rejected) > 6:
        reject_lines.append(f"  ... {len(rejected) - 6} more (--json lists them)")
    parts: list[Any] = [header, table, *(plain(line) for line in lines), verdict, *also]
    if what_if:
        parts += [Text("what if (modelled):"), *(Text(line) for line in what_if)]
    if reject_lines:
        parts += [Text("rejected draft tokens (q draft, p target):"), *(Text(line) for line in reject_lines)]
    print_table(Group(*parts))


def _render_worst(results: list[dict[str, Any]]) -> None:
    table = Table(title=f"slowest {len(results)} requests")
    for name in ("request_id", "latency ms", "tokens", "ms/token", "alpha", "verdict", "why"):
        table.add_column(name)
    for e in results:
        t = e["totals"]
        table.add_row(
            plain(e["request"]["request_id"]),
            _f(t["latency_ms"], ".0f"),
            str(t["emitted_tokens"]),
            _f(t["ms_per_token"]),
            _f(e["alpha"]),
            e["verdict"]["kind"],
            plain(e["verdict"]["summary"]),
        )
    print_table(table)
