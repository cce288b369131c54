"""Replaying prompt records through the pair: the Python entry point used by `specdiag replay` and the demo."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from specdiag.errors import InputError, UsageError

# The per-prompt keys of `specdiag replay --json` (plus first_divergence when the output differs from the target's).
PUBLIC_KEYS = (
    "prompt_id",
    "output_token_ids",
    "output_text",
    "steps",
    "drafted",
    "accepted",
    "acceptance_rate",
    "mean_acceptance_length",
    "draft_ms",
    "verify_ms",
    "target_only_ms",
    "speedup",
    "matches_target_only",
    "tv_max",
    "tv_mean",
)

# Logit gap (target top-1 minus top-2) below which a greedy divergence is a numeric near-tie for the dtype.
NEAR_TIE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.02}


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON view of one result (drops the step records and settings kept for --save)."""
    view = {key: result[key] for key in PUBLIC_KEYS}
    if result.get("first_divergence") is not None:
        view["first_divergence"] = result["first_divergence"]
    return view


def settings_for(
    record: dict[str, Any],
    tau: int | None,
    temperature: float | None,
    top_p: float | None,
    acceptance: str | None,
) -> dict[str, Any]:
    """Options given explicitly win; otherwise the record's production settings; otherwise greedy with tau 4.
    The rule defaults to strict for greedy and rejection (lossless) for temperature > 0."""
    chosen_tau = tau if tau is not None else record.get("tau", 4)
    chosen_t = temperature if temperature is not None else float(record.get("temperature") or 0.0)
    chosen_p = top_p if top_p is not None else float(record.get("top_p") or 1.0)
    rule = acceptance or ("strict" if chosen_t == 0 else "rejection")
    if rule == "strict" and chosen_t > 0:
        raise UsageError(
            f"prompt {record['prompt_id']}: strict acceptance is greedy but temperature is {chosen_t}",
            hint="use --acceptance rejection (lossless sampling) or --temperature 0",
        )
    return {"tau": int(chosen_tau), "temperature": chosen_t, "top_p": chosen_p, "acceptance": rule}


def replay_prompts(
    records: Iterable[dict[str, Any]],
    target: str = "demo",
    draft: str = "demo",
    *,
    tau: int | None = None,
    acceptance: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    typical_epsilon: float = 0.09,
    typical_delta: float = 0.3,
    max_new_tokens: int = 64,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    progress: bool = False,
    pair: Any = None,
    threads: int | None = 1,
) -> list[dict[str, Any]]:
    """Replay each record (see replay.prompts) and return one result dict per record.

    Each result has the PUBLIC_KEYS, `first_divergence` (None when the output matches the target alone), `record`
    (the input), `settings` and `step_records` (per step and per drafted token, for replay.save.save_results).
    `pair` (a replay.models.Pair) skips loading when the caller already holds the models. `threads` sets torch's
    CPU threads (process-wide) when running on CPU; None leaves them. Batch-1 decoding of small models is
    latency-bound: on a shared 2-core box one thread measured ~100x faster than two (docs/replay.md).
    """
    import torch

    from replay.models import load_pair

    records = list(records)
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be >= 1")
    if pair is None:
        pair = load_pair(target, draft, device=device, dtype=dtype, progress=progress)
    if pair.tokenizer_warning:
        from specdiag.output import message

        message(f"[bold red]warning:[/] {pair.tokenizer_warning}")
    if pair.device == "cpu" and threads:
        torch.set_num_threads(threads)
    jobs = [(record, settings_for(record, tau, temperature, top_p, acceptance)) for record in records]
    results = []
    with torch.inference_mode():
        if jobs:
            _warm_up(pair, _prompt_ids(pair, jobs[0][0]))
        for record, settings in _progress(jobs, progress):
            settings.update(
                seed=seed,
                max_new_tokens=max_new_tokens,
                typical_epsilon=typical_epsilon,
                typical_delta=typical_delta,
            )
            results.append(_replay_one(pair, record, settings))
    return results


def _progress(jobs: list[Any], show: bool) -> Iterable[Any]:
    if not show:
        return jobs
    from rich.progress import track

    from specdiag.output import err_console

    return track(jobs, description="replaying", console=err_console, transient=True)


def _prompt_ids(pair: Any, record: dict[str, Any]) -> list[int]:
    if record.get("prompt_ids") is not None:
        ids = [int(t) for t in record["prompt_ids"]]
        if max(ids) >= pair.vocab_size:
            raise InputError(
                f"prompt {record['prompt_id']}: token id {max(ids)} outside the vocabulary ({pair.vocab_size})"
            )
        return ids
    if pair.tokenizer is None:
        raise InputError(
            f"prompt {record['prompt_id']}: text prompt but the model folders have no tokenizer",
            hint="give prompt_ids instead",
        )
    ids = pair.tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"prompt {record['prompt_id']}: the prompt encodes to no tokens")
    return [int(t) for t in ids]


def _warm_up(pair: Any, prompt_ids: list[int]) -> None:
    """One short run of both loops so that timings exclude first-call allocation and kernel selection."""
    from replay.engine import speculative_generate, target_generate
    from replay.rules import Rule
    from replay.sampling import Sampling

    common = {"max_new_tokens": 4, "sampling": Sampling(), "generator": None, "vocab_size": pair.vocab_size}
    speculative_generate(pair.target, pair.draft, prompt_ids, tau=2, rule=Rule(), **common)
    target_generate(pair.target, prompt_ids, **common)


def _replay_one(pair: Any, record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    import torch

    from replay.engine import speculative_generate, target_generate
    from replay.rules import Rule
    from replay.sampling import Sampling

    prompt_ids = _prompt_ids(pair, record)
    sampling = Sampling(settings["temperature"], settings["top_p"])
    rule = Rule(settings["acceptance"], settings["typical_epsilon"], settings["typical_delta"])
    common = {
        "max_new_tokens": settings["max_new_tokens"],
        "sampling": sampling,
        "vocab_size": pair.vocab_size,
        "eos_token_id": pair.eos_token_id,
    }
    gen_device = pair.target.device
    spec = speculative_generate(
        pair.target,
        pair.draft,
        prompt_ids,
        tau=settings["tau"],
        rule=rule,
        generator=torch.Generator(gen_device).manual_seed(settings["seed"]),
        **common,
    )
    alone = target_generate(
        pair.target, prompt_ids, generator=torch.Generator(gen_device).manual_seed(settings["seed"]), **common
    )
    verify_steps = sum(1 for s in spec.steps if s.drafted > 0)
    drafted = sum(s.drafted for s in spec.steps)
    accepted = sum(s.accepted for s in spec.steps)
    tvs = [tv for s in spec.steps for tv in s.tv]
    # speedup per generated token: (target-alone ms / token) / (speculative ms / token)
    spec_ms = spec.draft_ms + spec.verify_ms
    speedup = (
        (alone.ms / len(alone.token_ids)) / (spec_ms / len(spec.token_ids))
        if spec_ms > 0 and alone.ms > 0
        else math.nan
    )
    matches = spec.token_ids == alone.token_ids
    decode = pair.tokenizer.decode if pair.tokenizer is not None else None
    step_records = []
    for s in spec.steps:
        tokens = [dict(t, token_text=decode([t["token_id"]]) if decode else None) for t in s.tokens]
        step_records.append(
            {
                "step": s.step,
                "drafted": s.drafted,
                "accepted": s.accepted,
                "draft_ms": s.draft_ms,
                "verify_ms": s.verify_ms,
                "tokens": tokens,
            }
        )
    return {
        "prompt_id": record["prompt_id"],
        "output_token_ids": spec.token_ids,
        "output_text": decode(spec.token_ids) if decode else None,
        "steps": len(spec.steps),
        "drafted": drafted,
        "accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted else math.nan,
        "mean_acceptance_length": 1.0 + accepted / verify_steps if verify_steps else math.nan,
        "draft_ms": spec.draft_ms,
        "verify_ms": spec.verify_ms,
        "target_only_ms": alone.ms,
        "speedup": speedup,
        "matches_target_only": matches,
        "tv_max": max(tvs) if tvs else 0.0,
        "tv_mean": sum(tvs) / len(tvs) if tvs else 0.0,
        "first_divergence": None
        if matches
        else first_divergence(spec.token_ids, alone, sampling.greedy, pair.dtype),
        "record": record,
        "settings": dict(
            settings, target=pair.target_name, draft=pair.draft_name, device=pair.device, dtype=pair.dtype
        ),
        "step_records": step_records,
    }


def first_divergence(spec_ids: list[int], alone: Any, greedy: bool, dtype: str) -> dict[str, Any]:
    """Where the speculative output first differs from the target alone, and whether that is a numeric near-tie.

    Greedy outputs should be identical; a difference where the target's top-2 logits are within NEAR_TIE[dtype] is
    a tie broken differently by batched vs single-token arithmetic, anything else is a real divergence (a bug or a
    lossy rule). Sampled outputs differ because the random draws differ: verdict `sampled`.
    """
    target_ids = alone.token_ids
    position = next(
        (i for i, (a, b) in enumerate(zip(spec_ids, target_ids)) if a != b),
        min(len(spec_ids), len(target_ids)),
    )
    margin = alone.logit_margins[position] if position < len(alone.logit_margins) else None
    if not greedy:
        verdict = "sampled"
    elif margin is not None and margin < NEAR_TIE.get(dtype, 1e-3):
        verdict = "near-tie"
    else:
        verdict = "real divergence"
    return {
        "position": position,
        "speculative_token": spec_ids[position] if position < len(spec_ids) else None,
        "target_only_token": target_ids[position] if position < len(target_ids) else None,
        "target_logit_margin": margin,
        "verdict": verdict,
    }
