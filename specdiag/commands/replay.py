"""`specdiag replay`: re-run prompts through an instrumented draft/verify pair (imports torch only when it runs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from specdiag.errors import UsageError
from specdiag.output import emit_json, message, out_console, plain
from specdiag.speedup import TAU_LIMIT


def _finite(value: float | None) -> float | None:
    """click's FloatRange lets nan through (every comparison with it is false)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _typical_option(name: str, default: float, help: str) -> Any:
    """A setting of the typical rule: a finite number >= 0."""
    return click.option(
        name,
        type=click.FloatRange(0, None),
        default=default,
        show_default=True,
        callback=lambda _ctx, _param, value: _finite(value),
        help=help,
    )


@click.command("replay")
@click.option("--target", default="demo", show_default=True, help="Target model folder (HF), or `demo`.")
@click.option("--draft", default="demo", show_default=True, help="Draft model folder (HF), or `demo`.")
@click.option(
    "--prompts", "prompts_path", type=click.Path(dir_okay=False), help="Prompt records (JSON Lines)."
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    envvar="SPECDIAG_DB",
    show_envvar=True,
    help="Store: --finding source, --save target.",
)
@click.option(
    "--finding", type=int, help="Replay the prompts `specdiag flag --finding N` picks (needs --db)."
)
@click.option(
    "--tau",
    type=click.IntRange(0, TAU_LIMIT),
    help="Draft tokens per verify step [default: record's, else 4].",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0, None),
    callback=lambda _ctx, _param, value: _finite(value),
    help="0 = greedy [default: record's, else 0].",
)
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    callback=lambda _ctx, _param, value: _finite(value),
    help="Nucleus mass [default: record's, else 1].",
)
@click.option(
    "--acceptance",
    type=click.Choice(["strict", "rejection", "typical"]),
    help="Acceptance rule [default: strict when greedy, else rejection].",
)
@_typical_option("--typical-epsilon", 0.09, "typical: posterior threshold.")
@_typical_option("--typical-delta", 0.3, "typical: entropy scale (alpha).")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(1, None),
    default=64,
    show_default=True,
    help="Tokens to generate per prompt.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Seed of every random draw.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto = cuda when available.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Weights and activations of both models.",
)
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True, help="CPU threads.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, None),
    default=1,
    show_default=True,
    help="Prompts replayed together, each row keeping its own acceptance lengths and output "
    "(pays most on a GPU).",
)
@click.option("--target-name", help="Name of the target in the store (as traces name it) [default: folder].")
@click.option("--draft-name", help="Name of the draft in the store [default: folder].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout instead of a table.")
@click.option("--save", is_flag=True, help="Write runs, steps and per-token records into the store (--db).")
@click.option("--profile-costs", is_flag=True, help="Measure forward-pass costs and store them (--db).")
@click.option(
    "--profile-tau-max",
    type=click.IntRange(1, 32),
    default=8,
    show_default=True,
    help="--profile-costs: target passes of 1..N+1 tokens.",
)
@click.option(
    "--profile-batch-sizes", default="1,2,4,8", show_default=True, help="Comma-separated batch sizes."
)
def replay(
    target: str,
    draft: str,
    prompts_path: str | None,
    db: str | None,
    finding: int | None,
    tau: int | None,
    temperature: float | None,
    top_p: float | None,
    acceptance: str | None,
    typical_epsilon: float,
    typical_delta: float,
    max_new_tokens: int,
    seed: int,
    device: str,
    dtype: str,
    threads: int,
    batch_size: int,
    target_name: str | None,
    draft_name: str | None,
    as_json: bool,
    save: bool,
    profile_costs: bool,
    profile_tau_max: int,
    profile_batch_sizes: str,
) -> None:
    """Replay prompts through a target/draft pair: what the draft gets wrong, what each pass costs, and whether
    the output is exactly the target's own.

    Prompts come from --prompts FILE or from a diagnose finding (--db FILE --finding N). --profile-costs measures
    the pair's forward passes (for `specdiag recommend`); it may run alone, without prompts.
    """
    if prompts_path and finding is not None:
        raise UsageError("give either --prompts or --finding, not both")
    if prompts_path is None and finding is None and not profile_costs:
        raise UsageError("nothing to replay", hint="pass --prompts FILE, or --db FILE --finding N")
    if (finding is not None or save or profile_costs) and not db:
        raise UsageError("--finding, --save and --profile-costs need --db")
    batch_sizes = _int_list(profile_batch_sizes)
    records = _records(prompts_path, db, finding)

    from replay.api import public, replay_prompts  # torch is imported from here on
    from replay.models import load_pair

    pair = load_pair(target, draft, device=device, dtype=dtype, progress=True)
    names = (target_name or _name(target, "target"), draft_name or _name(draft, "draft"))
    results: list[dict[str, Any]] = []
    if records:
        results = replay_prompts(
            records, tau=tau, acceptance=acceptance, temperature=temperature, top_p=top_p,
            typical_epsilon=typical_epsilon, typical_delta=typical_delta, max_new_tokens=max_new_tokens,
            seed=seed, progress=True, pair=pair, threads=threads, batch_size=batch_size,
        )  # fmt: skip
    profile: list[dict[str, Any]] = []
    if profile_costs:
        import torch

        from replay.profile import profile_costs as measure

        if pair.device == "cpu":
            torch.set_num_threads(threads)

        profile = measure(pair, tau_max=profile_tau_max, batch_sizes=batch_sizes, seed=seed)
    if save or profile_costs:
        _store(db, results if save else [], profile, names, pair)
    if as_json:
        payload: dict[str, Any] = {"results": [public(r) for r in results]}
        if profile:
            payload["cost_profile"] = profile
        emit_json(payload)
    else:
        _render(results, profile)


def _name(value: str, role: str) -> str:
    return f"demo-{role}" if value == "demo" else Path(value).name


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UsageError(f"--profile-batch-sizes: not a list of integers: {text!r}") from exc
    if not values or min(values) < 1:
        raise UsageError("--profile-batch-sizes: give positive integers, e.g. 1,2,4,8")
    return values


def _records(prompts_path: str | None, db: str | None, finding: int | None) -> list[dict[str, Any]]:
    from replay.prompts import read_prompts, validate_record

    if prompts_path:
        return read_prompts(prompts_path)
    if finding is None:
        return []
    from specdiag.diagnose import flag
    from specdiag.errors import InputError
    from specdiag.store import connect

    con = connect(db, read_only=True)
    try:
        picked = flag(con, finding_id=finding)
    finally:
        con.close()
    records = []
    for i, rec in enumerate(picked, start=1):
        try:
            records.append(validate_record(rec))
        except ValueError as exc:
            raise InputError(
                f"finding {finding}: prompt record {i}: {exc}", hint="was the prompt redacted?"
            ) from exc
    if not records:
        raise InputError(
            f"finding {finding}: no prompts to replay", hint="the requests may have no stored prompts"
        )
    return records


def _store(
    db: str | None,
    results: list[dict[str, Any]],
    profile: list[dict[str, Any]],
    names: tuple[str, str],
    pair: Any,
) -> None:
    from replay.save import save_cost_profile, save_results
    from specdiag.store import connect

    con = connect(db)
    try:
        if results:
            run_id = save_results(con, results, target_name=names[0], draft_name=names[1])
            message(f"saved replay run {run_id}: {len(results)} prompt(s) into {db}")
        if profile:
            profile_id = save_cost_profile(con, profile, names[0], names[1], pair.device, pair.dtype)
            message(f"saved cost profile {profile_id}: {len(profile)} points into {db}")
    finally:
        con.close()


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _render(results: list[dict[str, Any]], profile: list[dict[str, Any]]) -> None:
    if results:
        table = Table(title="replay")
        for col in (
            "prompt_id",
            "tokens",
            "steps",
            "acceptance_rate",
            "MAL",
            "speedup",
            "matches",
            "divergence",
            "tv_max",
        ):
            table.add_column(col)
        for r in results:
            div = r.get("first_divergence")
            table.add_row(
                plain(r["prompt_id"]), str(len(r["output_token_ids"])), str(r["steps"]), _fmt(r["acceptance_rate"]),
                _fmt(r["mean_acceptance_length"]), _fmt(r["speedup"]), "yes" if r["matches_target_only"] else "no",
                f"{div['verdict']} @ {div['position']}" if div else "", _fmt(r["tv_max"], 3),
            )  # fmt: skip
        out_console.print(table)
    if profile:
        table = Table(title="forward-pass costs (ms)")
        for col in ("batch_size", "n_tokens", "target_ms", "draft_ms_per_token"):
            table.add_column(col)
        for row in profile:
            table.add_row(
                str(row["batch_size"]),
                str(row["n_tokens"]),
                _fmt(row["target_ms"], 3),
                _fmt(row["draft_ms_per_token"], 3),
            )
        out_console.print(table)
