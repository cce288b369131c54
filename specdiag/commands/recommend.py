"""`specdiag recommend`: which tau to run, analytically (--alpha, --cost) or from the store."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.table import Table

from specdiag import recommend as lib
from specdiag.errors import UsageError
from specdiag.options import by_option, db_option, json_option
from specdiag.output import emit_json, message, out_console, plain
from specdiag.speedup import MAX_TAU, TAU_LIMIT
from specdiag.store import connect


@click.command("recommend")
@click.option("--alpha", type=float, help="Analytic mode: per-token acceptance probability alpha in [0, 1].")
@click.option(
    "--cost",
    "cost_ratio",
    type=float,
    help="c = draft forward time / target forward time. With --alpha: analytic mode. "
    "From the store: overrides the fitted costs (verification then assumed free).",
)
@click.option(
    "--tau", type=click.IntRange(0, TAU_LIMIT), help="Analytic mode: also report this tau's figures."
)
@click.option(
    "--max-tau",
    type=click.IntRange(1, TAU_LIMIT),
    default=MAX_TAU,
    show_default=True,
    help="Largest tau searched (the curve also reaches a larger logged tau).",
)
@click.option(
    "--budget",
    type=click.IntRange(1, None),
    help="Tokens the target can verify per step across the batch: allocate tau per request class (--by).",
)
@click.option(
    "--boot",
    "n_boot",
    type=click.IntRange(0, None),
    default=200,
    show_default=True,
    help="Bootstrap replicates.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@db_option
@by_option
@json_option
def recommend(
    alpha: float | None,
    cost_ratio: float | None,
    tau: int | None,
    max_tau: int,
    budget: int | None,
    n_boot: int,
    seed: int,
    db: str | None,
    by: list[str],
    as_json: bool,
) -> None:
    """Recommend tau (0 = speculation off) with the expected speedup.

    With --alpha and --cost: Leviathan et al. 2023 Eq. (1) and Thm 3.8. Otherwise, per deployment and --by segment
    from the store: censored per-position acceptance, fitted (or replay-profiled) costs, bootstrap intervals over
    requests, dynamic policies and, with --budget, a tau per request class.
    """
    if alpha is not None:
        if cost_ratio is None:
            raise UsageError("--alpha needs --cost", hint="e.g. specdiag recommend --alpha 0.8 --cost 0.05")
        result = lib.analytic(alpha, cost_ratio, tau=tau, max_tau=max_tau)
        emit_json(result) if as_json else _render_analytic(result, tau)
        return
    if tau is not None:
        raise UsageError("--tau applies to analytic mode only", hint="add --alpha A --cost C")
    con = connect(db, read_only=True)
    try:
        report = lib.recommend_report(
            con, by=by, max_tau=max_tau, n_boot=n_boot, seed=seed, cost_ratio=cost_ratio, budget=budget
        )
        nothing = not report["recommendations"] and not report["skipped"]
        if nothing:
            [(uncounted,)] = con.execute("select count(*) from windows where accepted is null").fetchall()
    finally:
        con.close()
    for skipped in report["skipped"]:
        message(f"{skipped['deployment']} ({_segment(skipped['segment'])}): {skipped['reason']}")
    if nothing:
        message(
            f"nothing to recommend: no speculative steps, and the {uncounted:,} engine windows carry no accepted "
            "token counts (SGLang logs print none)"
            if uncounted
            else "no speculative steps or engine windows in the store: nothing to recommend"
        )
    if as_json:
        emit_json(report)
    else:
        _render_report(report)


def _render_analytic(result: dict[str, Any], tau: int | None) -> None:
    table = Table(title="expected tokens per step and speedup (Leviathan et al. 2023 Eq. 1, Thm 3.8)")
    for col in ("tau", "tokens/step", "speedup", ""):
        table.add_column(col, justify="right")
    for row in result["curve"]:
        mark = "best" if row["tau"] == result["recommended_tau"] else ("--tau" if row["tau"] == tau else "")
        table.add_row(
            str(row["tau"]), f"{row['expected_tokens_per_step']:.3f}", f"{row['speedup']:.3f}x", mark
        )
    out_console.print(table)
    out_console.print(
        f"recommended tau {result['recommended_tau']}: "
        f"{result['expected_speedup']:.3f}x{'' if tau is None else f' at tau {tau}'}"
    )


def _segment(seg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in seg.items()) or "all"


def _batch(row: dict[str, Any]) -> str:
    lo, hi = row["batch_size"], row["batch_size_max"]
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _values(seg: dict[str, Any]) -> str:
    return " / ".join(str(v) for v in seg.values()) or "all"


def _render_report(report: dict[str, Any]) -> None:
    table = Table(
        title="tau recommendations: tau and speedup now > at the recommended tau", box=box.SIMPLE_HEAD
    )
    recs = report["recommendations"]
    table.add_column("deployment", overflow="fold", min_width=11)
    table.add_column(
        plain(" / ".join(recs[0]["segment"])) if recs and recs[0]["segment"] else "segment", overflow="fold"
    )
    for col in ("alpha", "c", "tau", "speedup", "95% CI", "gain"):
        table.add_column(col, justify="right")
    for r in report["recommendations"]:
        lo, hi = r["ci"] or (None, None)
        table.add_row(
            plain(r["deployment"]),
            plain(_values(r["segment"])),
            f"{r['alpha']:.3f}",
            f"{r['cost_ratio']:.3f}",
            f"{r['current_tau']}>{r['recommended_tau']}",
            f"{r['current_speedup']:.2f}>{r['expected_speedup']:.2f}",
            "-" if lo is None else f"{lo:.2f}-{hi:.2f}",
            "-" if r["gain"] is None else f"{100 * r['gain']:+.1f}%",
        )
    if recs:  # no empty table when there is nothing to recommend
        out_console.print(table)
    for r in report["recommendations"]:
        if r.get("tau_by_batch_size"):
            bt = Table(title=plain(f"{r['deployment']} ({_segment(r['segment'])}): tau by batch size"))
            for col in ("batch size", "steps", "best tau", "speedup"):
                bt.add_column(col, justify="right")
            for row in r["tau_by_batch_size"]:
                bt.add_row(
                    _batch(row),
                    str(row["steps"]),
                    str(row["recommended_tau"]),
                    f"{row['expected_speedup']:.2f}x",
                )
            out_console.print(bt)
        for note in r.get("notes", []):
            message(f"{r['deployment']} ({_segment(r['segment'])}): {note}")
    if report.get("policies"):
        pt = Table(title="policies ranked by expected speedup")
        for col in ("deployment", "segment", "rank", "policy", "setting", "speedup"):
            pt.add_column(col)
        for p in report["policies"]:
            for i, row in enumerate(p["ranking"], start=1):
                setting = {
                    "fixed": f"tau {row.get('tau')}",
                    "heuristic": f"+2/-1, mean tau {row.get('mean_tau', 0):.1f}",
                    "confidence_threshold": f"stop at q < {row.get('threshold')}",
                }[row["policy"]]
                pt.add_row(
                    plain(p["deployment"]),
                    plain(_segment(p["segment"])),
                    str(i),
                    row["policy"],
                    setting,
                    f"{row['expected_speedup']:.2f}x",
                )
        out_console.print(pt)
        for note in dict.fromkeys(n for p in report["policies"] for n in p["notes"]):
            message(note)
    for d in report.get("drafts", []):
        where = (
            f"target {d['target_model']} (replays)"
            if d["source"] == "replay"
            else f"{d['deployment']} ({_segment(d['segment'])})"
        )
        dt = Table(title=plain(f"{where}: drafts ranked by expected speedup"))
        for col in ("draft", "best tau", "speedup", "acceptance", "c", "flag"):
            dt.add_column(col)
        for row in d["drafts"]:
            flag = "not much cheaper than the target" if row["not_much_cheaper"] else ""
            accept = (
                f"alpha {row['alpha']:.3f}" if "alpha" in row else f"MAL {row['mean_acceptance_length']:.2f}"
            )
            c = "-" if row["cost_ratio"] is None else f"{row['cost_ratio']:.3f}"
            dt.add_row(
                plain(row["draft_model"]),
                str(row["recommended_tau"]),
                f"{row['expected_speedup']:.2f}x",
                accept,
                c,
                flag,
            )
        out_console.print(dt)
    for b in report.get("budget", []):
        bt = Table(
            title=plain(f"{b['deployment']}: budget {b['budget']} tokens per step, batch {b['batch_size']}")
        )
        for col in ("segment", "sequences", "tau"):
            bt.add_column(col)
        for row in b["classes"]:
            bt.add_row(plain(_segment(row["segment"])), str(row["sequences"]), f"{row['tau']:.2f}")
        out_console.print(bt)
        gain = "-" if b["gain"] is None else f"{100 * b['gain']:+.1f}%"
        out_console.print(
            f"expected accepted tokens per step {b['expected_accepted']:.2f} vs {b['uniform_expected_accepted']:.2f} "
            f"at uniform tau {b['uniform_tau']} ({gain})"
        )
