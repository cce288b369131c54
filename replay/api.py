"""Replaying prompt records through the pair: the Python entry point used by `specdiag replay` and the demo."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from specdiag.errors import InputError, UsageError
from specdiag.traceformat import TYPICAL_RULES, acceptance_rule

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
    The rule defaults to strict for greedy and rejection (lossless) for temperature > 0; a record whose production
    rule was typical acceptance (``typical``, vLLM's ``typical_acceptance_sampler``; the lossy rule flag reports as fast_but_wrong) is replayed with it."""
    chosen_tau = tau if tau is not None else (record["tau"] if record.get("tau") is not None else 4)
    chosen_t = temperature if temperature is not None else float(record.get("temperature") or 0.0)
    chosen_p = top_p if top_p is not None else float(record.get("top_p") or 1.0)
    production = acceptance_rule(str(record.get("acceptance") or ""))
    rule = acceptance or (
        "typical" if production in TYPICAL_RULES else "strict" if chosen_t == 0 else "rejection"
    )
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
    batch_size: int = 1,
) -> list[dict[str, Any]]:
    """Replay each record (see replay.prompts) and return one result dict per record.

    Each result has the PUBLIC_KEYS, `first_divergence` (None when the output matches the target alone), `record`
    (the input), `settings` and `step_records` (per step and per drafted token, for replay.save.save_results).
    `pair` (a replay.models.Pair) skips loading when the caller already holds the models. `threads` sets torch's
    CPU threads (process-wide) when running on CPU; None leaves them. Batch-1 decoding of small models is
    latency-bound: on a shared 2-core box one thread measured ~100x faster than two (docs/replay.md).
    `batch_size` > 1 replays up to that many records with equal tau/temperature/top_p/rule together (replay.batch):
    each row's output and statistics are its batch-1 ones (up to float rounding), its times an equal share of each
    batched pass; results stay in input order.
    """
    import torch

    from replay.models import load_pair

    records = list(records)
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be >= 1")
    if batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if pair is None:
        pair = load_pair(target, draft, device=device, dtype=dtype, progress=progress)
    if pair.tokenizer_warning:
        from specdiag.output import message

        message(f"warning: {pair.tokenizer_warning}")
    if pair.device == "cpu" and threads:
        torch.set_num_threads(threads)
    jobs = [(record, settings_for(record, tau, temperature, top_p, acceptance)) for record in records]
    for _, settings in jobs:
        settings.update(
            seed=seed,
            max_new_tokens=max_new_tokens,
            typical_epsilon=typical_epsilon,
            typical_delta=typical_delta,
            batch_size=batch_size,
        )
    for record, settings in jobs:  # every prompt checked before the first is run
        _fits(pair, record, _prompt_ids(pair, record), settings["max_new_tokens"])
    groups = _batches(len(jobs), batch_size, [_batch_key(settings) for _, settings in jobs])
    results: list[dict[str, Any]] = [{} for _ in jobs]
    with torch.inference_mode():
        if jobs:
            _warm_up(pair, [_prompt_ids(pair, jobs[i][0]) for i in groups[0]], batched=batch_size > 1)
        for group in _progress(groups, progress):
            runs = (
                _run_batch(pair, [jobs[i] for i in group])
                if batch_size > 1
                else [_run_one(pair, *jobs[group[0]])]
            )
            for i, (spec, alone) in zip(group, runs):
                record, settings = jobs[i]
                results[i] = _result(pair, record, settings, spec, alone)
    return results


def _batch_key(settings: dict[str, Any]) -> tuple[Any, ...]:
    # rows of one batch share tau, sampling and rule, as the requests of one serving batch do
    return tuple(settings[k] for k in ("tau", "temperature", "top_p", "acceptance"))


def _batches(count: int, size: int, keys: list[tuple[Any, ...]]) -> list[list[int]]:
    """Job indices in batches of at most `size` with equal keys, in order of each batch's first job."""
    batches: list[list[int]] = []
    open_batch: dict[tuple[Any, ...], list[int]] = {}
    for i in range(count):
        batch = open_batch.get(keys[i])
        if batch is None or len(batch) == size:
            batch = open_batch[keys[i]] = []
            batches.append(batch)
        batch.append(i)
    return batches


def _progress(groups: list[Any], show: bool) -> Iterable[Any]:
    if not show:
        return groups
    from rich.progress import track

    from specdiag.output import err_console

    return track(groups, description="replaying", console=err_console, transient=True)


def _prompt_ids(pair: Any, record: dict[str, Any]) -> list[int]:
    if record.get("prompt_ids") is not None:
        return _in_vocabulary(pair, record, [int(t) for t in record["prompt_ids"]])
    if pair.tokenizer is None:
        raise InputError(
            f"prompt {record['prompt_id']}: text prompt but the model folders have no tokenizer",
            hint="give prompt_ids instead",
        )
    ids = pair.tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"prompt {record['prompt_id']}: the prompt encodes to no tokens")
    return _in_vocabulary(pair, record, [int(t) for t in ids])


def _fits(pair: Any, record: dict[str, Any], ids: list[int], max_new_tokens: int) -> None:
    """Prompt and output within the positions both models were built for (learned position embeddings, as GPT-2's,
    fail beyond them; rotary ones run on, untrained)."""
    from replay.models import position_limit

    limit = position_limit(pair)
    if limit is not None and len(ids) + max_new_tokens > limit:
        raise InputError(
            f"prompt {record['prompt_id']}: {len(ids)} prompt tokens + {max_new_tokens} new tokens exceed the "
            f"{limit} positions of the models",
            hint="lower --max-new-tokens or shorten the prompt",
        )


def _in_vocabulary(pair: Any, record: dict[str, Any], ids: list[int]) -> list[int]:
    """The ids, if both models can embed them (the tokenizer may know more ids than the smaller model)."""
    if max(ids) >= pair.vocab_size:
        raise InputError(
            f"prompt {record['prompt_id']}: token id {max(ids)} is outside the vocabulary both models share "
            f"({pair.vocab_size} ids)"
        )
    return ids


def _warm_up(pair: Any, prompts: list[list[int]], batched: bool) -> None:
    """One short run of the loops about to be timed (the batched ones on these prompts when batched), so that
    timings exclude first-call allocation and kernel selection."""
    from replay.batch import speculative_generate_batch, target_generate_batch
    from replay.engine import speculative_generate, target_generate
    from replay.rules import Rule
    from replay.sampling import Sampling

    common = {"max_new_tokens": 4, "sampling": Sampling(), "vocab_size": pair.vocab_size}
    if batched:
        speculative_generate_batch(
            pair.target, pair.draft, prompts, tau=2, rule=Rule(), generators=None, **common
        )
        target_generate_batch(pair.target, prompts, generators=None, **common)
    else:
        speculative_generate(
            pair.target, pair.draft, prompts[0], tau=2, rule=Rule(), generator=None, **common
        )
        target_generate(pair.target, prompts[0], generator=None, **common)


def _generator(pair: Any, settings: dict[str, Any]) -> Any:
    import torch

    return torch.Generator(pair.target.device).manual_seed(settings["seed"])


def _run_one(pair: Any, record: dict[str, Any], settings: dict[str, Any]) -> tuple[Any, Any]:
    """The speculative loop and the target alone on one record (batch 1), each with a fresh seeded generator."""
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
    spec = speculative_generate(pair.target, pair.draft, prompt_ids, tau=settings["tau"], rule=rule,
                                generator=_generator(pair, settings), **common)  # fmt: skip
    alone = target_generate(pair.target, prompt_ids, generator=_generator(pair, settings), **common)
    return spec, alone


def _run_batch(pair: Any, jobs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[tuple[Any, Any]]:
    """_run_one for jobs with equal settings, their rows run together (replay.batch); one generator per row seeded
    as in batch 1, so that each row draws what it would draw alone."""
    from replay.batch import speculative_generate_batch, target_generate_batch
    from replay.rules import Rule
    from replay.sampling import Sampling

    for role, model in (("target", pair.target), ("draft", pair.draft)):
        if _sliding_window(model.config):
            raise UsageError(
                f"--batch-size > 1: the {role} uses sliding-window attention, whose window would count padding holes",
                hint="use --batch-size 1 for this model",
            )
    prompts = [_prompt_ids(pair, record) for record, _ in jobs]
    s = jobs[0][1]
    common = {
        "max_new_tokens": s["max_new_tokens"],
        "sampling": Sampling(s["temperature"], s["top_p"]),
        "vocab_size": pair.vocab_size,
        "eos_token_id": pair.eos_token_id,
    }
    rule = Rule(s["acceptance"], s["typical_epsilon"], s["typical_delta"])
    specs = speculative_generate_batch(pair.target, pair.draft, prompts, tau=s["tau"], rule=rule,
                                       generators=[_generator(pair, s) for _ in jobs], **common)  # fmt: skip
    alones = target_generate_batch(
        pair.target, prompts, generators=[_generator(pair, s) for _ in jobs], **common
    )
    return list(zip(specs, alones))


def _sliding_window(config: Any) -> bool:
    """Whether some attention layer sees only the last W cache slots (a batched row's holes would take slots in it)."""
    if any("sliding" in str(kind) for kind in getattr(config, "layer_types", None) or ()):
        return True
    return (
        getattr(config, "sliding_window", None) is not None
        and getattr(config, "use_sliding_window", True) is not False
    )


def _result(
    pair: Any, record: dict[str, Any], settings: dict[str, Any], spec: Any, alone: Any
) -> dict[str, Any]:
    """One result dict (PUBLIC_KEYS, first_divergence, record, settings, step_records) from the two runs."""
    from replay.sampling import Sampling

    sampling = Sampling(settings["temperature"], settings["top_p"])
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
