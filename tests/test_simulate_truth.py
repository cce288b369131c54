"""The simulated traffic matches its ground truth within sampling error.

Tolerances are derived from the sample: acceptance estimates are ratios pooled over steps, and steps of one
request share its difficulty, so their standard error is the cluster-robust (by request) ratio SE; a test allows
4 SE plus a small model margin for the renewal approximation used by the truth (stated where used).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from specdiag.simulate import simulate
from specdiag.simulate.config import fleet_from_dict
from specdiag.speedup import CostModel, best_tau, speedup_curve

Z = 4.0  # standard errors allowed
MODEL_MARGIN = 0.003  # truth's E[steps | difficulty] is a renewal approximation; its error is far below this


def _read(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    requests = pl.read_ndjson(path, infer_schema_length=None).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC"), r=pl.int_range(pl.len())
    )
    steps = requests.select("r", "steps").explode("steps").unnest("steps")
    return requests.drop("steps"), steps


def _ratio(x: np.ndarray, y: np.ndarray, cluster: np.ndarray) -> tuple[float, float]:
    """Pooled ratio sum(x) / sum(y) and its cluster-robust standard error (clusters = requests)."""
    _, inv = np.unique(cluster, return_inverse=True)
    xs, ys = np.bincount(inv, weights=x), np.bincount(inv, weights=y)
    ratio = xs.sum() / ys.sum()
    return float(ratio), float(np.sqrt(((xs - ratio * ys) ** 2).sum()) / ys.sum())


def _mal(steps: pl.DataFrame) -> tuple[float, float]:
    acc = steps["accepted"].to_numpy().astype(float)
    return _ratio(acc + 1, np.ones_like(acc), steps["r"].to_numpy())


FLEET = {
    "fleet": {"days": 1.0, "control_share": 0.1, "shadow_share": 0.5},
    "deployments": [
        {
            "name": "d",
            "target_model": "t@v1",
            "draft_model": "q@v1",
            "tau": 5,
            "share": 1.0,
            "batch_size": 8,
            "floor_ms": 10.0,
            "compute_ms": 0.2,
            "draft_ms_per_token": 1.0,
            "tasks": {"code": 0.5, "chat": 0.5},
            "temperatures": [0.0, 0.8],
            "temperature_shares": [0.5, 0.5],
            "decay": 0.95,
            "difficulty": 4.0,
        }
    ],
    "incidents": [
        {"kind": "draft_rollout", "deployment": "d", "task": "chat", "start": 0.5, "acceptance_drop": 0.2},
        {"kind": "lossy_acceptance", "deployment": "d", "task": "code", "start": 0.5},
    ],
}


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    out = tmp_path_factory.mktemp("sim") / "one.jsonl"
    truth = simulate(out, config=fleet_from_dict(FLEET), requests=4000, seed=7)
    return (truth, *_read(out))


def _period_of(truth_dep: dict, ts: pl.Series) -> np.ndarray:
    starts = [np.datetime64(p["start"].removesuffix("Z"), "us") for p in truth_dep["periods"]]  # naive UTC
    return np.searchsorted(np.array(starts[1:]), ts.dt.replace_time_zone(None).to_numpy(), side="right")


def test_acceptance_by_position_matches_truth_per_segment_and_period(one) -> None:
    truth, requests, steps = one
    dep = truth["deployments"][0]
    requests = requests.with_columns(period=_period_of(dep, requests["ts"]))
    spec = steps.join(requests.select("r", "task", "temperature", "period"), on="r").filter(
        pl.col("drafted") > 0
    )
    checked = 0
    for p, period in enumerate(dep["periods"]):
        for seg in period["segments"]:
            s = spec.filter(
                (pl.col("period") == p)
                & (pl.col("task") == seg["task"])
                & (pl.col("temperature") == seg["temperature"])
            )
            acc, r = s["accepted"].to_numpy(), s["r"].to_numpy()
            for i in range(1, period["tau"] + 1):  # conditional acceptance at position i
                est, se = _ratio((acc >= i).astype(float), (acc >= i - 1).astype(float), r)
                assert abs(est - seg["alpha_by_position"][i - 1]) <= Z * se + MODEL_MARGIN, (
                    p,
                    seg["task"],
                    i,
                )
                checked += 1
            est, se = _mal(s)
            assert abs(est - seg["mean_acceptance_length"]) <= Z * se + MODEL_MARGIN * period["tau"]
    assert checked == 2 * 4 * 5  # 2 periods x (2 tasks x 2 temperatures) x 5 positions


def test_incidents_change_what_their_scope_logs_from_their_start(one) -> None:
    truth, requests, steps = one
    start = datetime.fromisoformat(truth["incidents"][0]["start"].replace("Z", "+00:00"))
    before, after = requests.filter(pl.col("ts") < start), requests.filter(pl.col("ts") >= start)
    assert set(before["draft_model"]) == {"q@v1"} and set(after["draft_model"]) == {"q@v2"}
    assert set(after.filter(pl.col("task") == "code")["acceptance"]) == {"typical"}
    assert set(after.filter(pl.col("task") == "chat")["acceptance"]) == {"rejection"}
    # fast but wrong: quality and shadow matches of code fall by the configured amounts
    for frame, drop, rate in ((before, 0.0, 0.98), (after, 0.15, 0.55)):
        code = frame.filter(pl.col("task") == "code")
        q = code["quality"].to_numpy()
        assert abs(q.mean() - (0.86 - drop)) <= Z * q.std() / np.sqrt(len(q))
        shadow = code["shadow_match"].drop_nulls().to_numpy().astype(float)
        assert abs(shadow.mean() - rate) <= Z * np.sqrt(rate * (1 - rate) / len(shadow)) + 1e-9
    # chat acceptance falls, code acceptance rises, as the truth says
    seg = {
        (p, s["task"]): s for p, per in enumerate(truth["deployments"][0]["periods"]) for s in per["segments"]
    }
    assert seg[(1, "chat")]["mean_acceptance_length"] < seg[(0, "chat")]["mean_acceptance_length"] - 0.3
    assert seg[(1, "code")]["mean_acceptance_length"] > seg[(0, "code")]["mean_acceptance_length"]


def test_control_share_and_control_steps(one) -> None:
    truth, requests, steps = one
    control = requests["tau"].to_numpy() == 0
    n = len(control)
    assert abs(control.mean() - 0.1) <= Z * np.sqrt(0.1 * 0.9 / n)
    ctl = steps.join(requests.filter(pl.col("tau") == 0).select("r"), on="r")
    assert ctl["drafted"].max() == 0 and ctl["accepted"].max() == 0 and ctl["draft_ms"].max() == 0


def test_step_times_follow_the_cost_model(one) -> None:
    """verify_ms = (floor + compute * (tau + 1) * B) * noise with mean-one noise: OLS recovers floor and compute
    (heteroscedasticity-robust SE); draft_ms / drafted recovers the draft cost per token."""
    truth, requests, steps = one
    cost = truth["deployments"][0]["cost_model"]
    s = steps.join(requests.select("r", "batch_size"), on="r")
    x = ((s["drafted"] + 1) * s["batch_size"]).to_numpy().astype(float)
    y = s["verify_ms"].to_numpy()
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    bread = np.linalg.inv(design.T @ design)
    cov = bread @ (design.T * resid**2) @ design @ bread
    se = np.sqrt(np.diag(cov))
    assert abs(beta[0] - cost["floor_ms"]) <= Z * se[0] + 0.0005  # + rounding of ms to 3 decimals
    assert abs(beta[1] - cost["compute_ms"]) <= Z * se[1]
    d = s.filter(pl.col("drafted") > 0)
    per_token = (d["draft_ms"] / d["drafted"]).to_numpy()
    assert (
        abs(per_token.mean() - cost["draft_ms_per_token"])
        <= Z * per_token.std() / np.sqrt(len(per_token)) + 5e-4
    )


def test_latency_is_queue_plus_prefill_plus_steps(one) -> None:
    _, requests, steps = one
    per = steps.group_by("r").agg(
        total=(pl.col("draft_ms") + pl.col("verify_ms")).sum(),
        first=(pl.col("draft_ms") + pl.col("verify_ms")).first(),
        n=pl.len(),
    )
    j = requests.join(per, on="r")
    head_from_latency = (j["latency_ms"] - j["total"]).to_numpy()
    head_from_ttft = (j["ttft_ms"] - j["first"]).to_numpy()
    # the same queue + prefill time opens both; they differ only by rounding to 0.001 ms per value
    assert np.all(np.abs(head_from_latency - head_from_ttft) <= 1e-3 * (j["n"].to_numpy() + 2))
    assert head_from_latency.min() > 0


def test_truth_curve_is_the_shared_speedup_model_for_iid_acceptance(tmp_path: Path) -> None:
    """With no decay and (almost) no per-request spread, the truth is Leviathan et al. Eq. 1 / the shared
    speedup_curve at the configured alpha, and best_tau is its argmax."""
    cfg = {
        **FLEET,
        "incidents": [],
        "deployments": [
            {
                **FLEET["deployments"][0],
                "decay": 1.0,
                "difficulty": 1e6,
                "temperatures": [0.0],
                "temperature_shares": [1.0],
                "tasks": {"summarize": 1.0},
            }
        ],
    }
    truth = simulate(tmp_path / "iid.jsonl", config=fleet_from_dict(cfg), requests=10)
    dep = truth["deployments"][0]
    cost = CostModel(**dep["cost_model"])
    expected = speedup_curve(0.82, cost, dep["typical_batch_size"])
    for got, want in zip(dep["speedup_curve"], expected, strict=True):
        assert got["speedup"] == pytest.approx(want["speedup"], abs=2e-3)
    assert dep["best_tau"] == best_tau(dep["speedup_curve"])
    assert np.allclose(dep["alpha_by_position"], 0.82, atol=2e-3)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    out = tmp_path_factory.mktemp("sim") / "mixed.jsonl"
    truth = simulate(out, scenario="mixed", requests=6000, seed=1)
    return (truth, *_read(out))


def test_mixed_scenario_every_period_matches_truth(mixed) -> None:
    """Each deployment's acceptance per period (all incidents: rollout, lossy, surge, tau, temperature,
    tokenizer) matches the truth."""
    truth, requests, steps = mixed
    for dep in truth["deployments"]:
        reqs = requests.filter(pl.col("deployment") == dep["name"])
        reqs = reqs.with_columns(period=_period_of(dep, reqs["ts"]))
        s = steps.join(reqs.select("r", "period", "tau"), on="r").filter(pl.col("drafted") > 0)
        for p, period in enumerate(dep["periods"]):
            sp = s.filter(pl.col("period") == p)
            assert set(sp["drafted"]) == {period["tau"]}
            est, se = _mal(sp)
            assert abs(est - period["mean_acceptance_length"]) <= Z * se + MODEL_MARGIN * period["tau"], (
                dep["name"],
                p,
            )


def test_mixed_scenario_incident_effects(mixed) -> None:
    truth, requests, steps = mixed
    inc = {i["kind"]: i for i in truth["incidents"]}

    def split(kind: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        i = inc[kind]
        start = datetime.fromisoformat(i["start"].replace("Z", "+00:00"))
        r = requests.filter((pl.col("deployment") == i["deployment"]) & (pl.col("tau") > 0))
        if i["task"]:
            r = r.filter(pl.col("task") == i["task"])
        return r.filter(pl.col("ts") < start), r.filter(pl.col("ts") >= start)

    before, after = split("batch_surge")  # running batch x4 (same load cycle on both sides)
    ratio = after["batch_size"].mean() / before["batch_size"].mean()
    assert 3.4 < ratio < 4.6
    before, after = split("tau_misconfig")
    assert set(after["tau"]) == {12} and set(before["tau"]) == {4}
    before, after = split("temperature_change")
    assert set(after["temperature"]) == {1.0} and 1.0 not in set(before["temperature"])
    before, after = split("tokenizer_mismatch")
    b = steps.join(before.select("r"), on="r")["accepted"].mean()
    a = steps.join(after.select("r"), on="r")["accepted"].mean()
    assert a < 0.35 * b  # acceptance collapses on the non-English task
    assert set(after["draft_model"]) == {inc["tokenizer_mismatch"]["params"]["draft_model"]}


def test_small_verifier_swaps_the_target_and_cheapens_verification(tmp_path: Path) -> None:
    cfg = {
        **FLEET,
        "incidents": [{"kind": "small_verifier", "deployment": "d", "start": 0.5, "verify_scale": 0.35}],
    }
    out = tmp_path / "small.jsonl"
    truth = simulate(out, config=fleet_from_dict(cfg), requests=800, seed=2)
    requests, steps = _read(out)
    before, after = truth["deployments"][0]["periods"]
    assert after["cost_model"]["floor_ms"] == pytest.approx(0.35 * before["cost_model"]["floor_ms"])
    assert after["segments"][0]["target_model"] == "t-8b@v1"
    start = datetime.fromisoformat(after["start"].replace("Z", "+00:00"))
    late = requests.filter(pl.col("ts") >= start)
    assert set(late["target_model"]) == {"t-8b@v1"}
    assert set(requests.filter(pl.col("ts") < start)["target_model"]) == {"t@v1"}
    # verify time per unit of modelled cost falls to verify_scale (noise has mean one; 4 SE of the ratio)
    s = steps.join(requests.select("r", "ts", "batch_size"), on="r").with_columns(
        model=10.0 + 0.2 * (pl.col("drafted") + 1) * pl.col("batch_size"), late=pl.col("ts") >= start
    )
    ratio = (s["verify_ms"] / s["model"]).to_numpy()
    late_mask = s["late"].to_numpy()
    for mask, expected in ((~late_mask, 1.0), (late_mask, 0.35)):
        r = ratio[mask]
        assert abs(r.mean() - expected) <= Z * r.std() / np.sqrt(len(r)) + 1e-3


def test_a_temperature_change_leaves_one_segment_per_task_and_temperature(tmp_path: Path) -> None:
    """temperature_change maps both configured temperatures onto one: the truth lists that segment once, with the
    share its requests have (it listed it twice, each with half the share)."""
    cfg = {
        **FLEET,
        "incidents": [{"kind": "temperature_change", "deployment": "d", "task": "chat", "start": 0.5}],
    }
    out = tmp_path / "temp.jsonl"
    truth = simulate(out, config=fleet_from_dict(cfg), requests=4000, seed=3)
    requests, _ = _read(out)
    late = truth["deployments"][0]["periods"][1]
    keys = [(s["task"], s["temperature"]) for s in late["segments"]]
    assert sorted(keys) == [("chat", 1.0), ("code", 0.0), ("code", 0.8)]
    start = datetime.fromisoformat(late["start"].replace("Z", "+00:00"))
    r = requests.filter((pl.col("ts") >= start) & (pl.col("tau") > 0))
    for seg in late["segments"]:
        n = r.filter((pl.col("task") == seg["task"]) & (pl.col("temperature") == seg["temperature"])).height
        p = seg["request_share"]
        assert abs(n - r.height * p) <= Z * np.sqrt(r.height * p * (1 - p)), seg["task"]


def test_truth_quality_mean_is_the_mean_the_generator_draws_from(tmp_path: Path) -> None:
    cfg = {
        **FLEET,
        "incidents": [
            {"kind": "lossy_acceptance", "deployment": "d", "start": 0.5, "quality_drop": 0.5},
            {"kind": "small_verifier", "deployment": "d", "start": 0.5, "quality_drop": 0.5},
        ],
    }
    out = tmp_path / "q.jsonl"
    truth = simulate(out, config=fleet_from_dict(cfg), requests=2000, seed=4)
    requests, _ = _read(out)
    late = truth["deployments"][0]["periods"][1]
    start = datetime.fromisoformat(late["start"].replace("Z", "+00:00"))
    q = requests.filter(pl.col("ts") >= start)["quality"].to_numpy()
    for seg in late["segments"]:
        assert seg["quality_mean"] == pytest.approx(0.01)  # 0.84 or 0.86 minus 1.0, clipped as generated
    assert abs(q.mean() - 0.01) <= Z * q.std() / np.sqrt(len(q)) + 1e-4
