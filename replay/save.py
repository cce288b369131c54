"""Writing replay results and cost profiles into the store, in one transaction each (all or nothing)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import duckdb

from specdiag.store import transaction


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the store keeps naive UTC timestamps


def _finite(x: Any) -> Any:
    return None if isinstance(x, float) and x != x else x  # NaN -> NULL


def save_results(
    con: duckdb.DuckDBPyConnection,
    results: list[dict[str, Any]],
    run_id: str | None = None,
    target_name: str | None = None,
    draft_name: str | None = None,
) -> str:
    """Insert one replay_runs row per result, its replay_steps and replay_tokens; returns the run_id.

    target_name/draft_name label the pair as production traces name it (requests.target_model/draft_model), so
    that queries can join replay with production; default: the names the results were run with.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    created = _now()
    runs, steps, tokens = [], [], []
    for r in results:
        s, rec = r["settings"], r["record"]
        runs.append(
            [
                run_id, r["prompt_id"], rec.get("request_id"), rec.get("finding_id"), created,
                target_name or s["target"], draft_name or s["draft"], s["device"], s["dtype"], s["tau"],
                s["temperature"], s["top_p"], s["acceptance"], s["seed"], r["steps"], r["drafted"], r["accepted"],
                _finite(r["acceptance_rate"]), _finite(r["mean_acceptance_length"]), r["draft_ms"], r["verify_ms"],
                r["target_only_ms"], _finite(r["speedup"]), r["matches_target_only"], r["tv_max"], r["tv_mean"],
                r["output_text"], json.dumps(r["first_divergence"]) if r.get("first_divergence") else None,
                s.get("batch_size", 1),
            ]
        )  # fmt: skip
        for st in r["step_records"]:
            steps.append(
                [
                    run_id,
                    r["prompt_id"],
                    st["step"],
                    st["drafted"],
                    st["accepted"],
                    st["draft_ms"],
                    st["verify_ms"],
                ]
            )
            for t in st["tokens"]:
                tokens.append(
                    [
                        run_id, r["prompt_id"], st["step"], t["position"], t["token_id"], t.get("token_text"),
                        t["q"], t["p"], t["accepted"], t["entropy"], t["margin"],
                    ]
                )  # fmt: skip
    with transaction(con):
        if runs:
            con.executemany(f"insert into replay_runs values ({', '.join(['?'] * 29)})", runs)
        if steps:
            con.executemany("insert into replay_steps values (?, ?, ?, ?, ?, ?, ?)", steps)
        if tokens:
            con.executemany("insert into replay_tokens values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tokens)
    return run_id


def save_cost_profile(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict[str, Any]],
    target: str,
    draft: str,
    device: str,
    dtype: str,
) -> str:
    """Insert profile_costs() rows into cost_profiles; returns the profile_id."""
    profile_id = uuid.uuid4().hex[:12]
    created = _now()
    values = [
        [profile_id, created, target, draft, device, dtype, r["batch_size"], r["n_tokens"], r["target_ms"],
         r["draft_ms_per_token"]]
        for r in rows
    ]  # fmt: skip
    with transaction(con):
        con.executemany("insert into cost_profiles values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    return profile_id
