"""Measured forward-pass costs of the pair: target ms for n = 1..tau_max + 1 tokens per sequence at several batch
sizes, and draft ms per token. Stored in `cost_profiles`, from which recommend fits t(n, B) = floor + compute * n * B
(`queries/recommend_profiles.sql`)."""

from __future__ import annotations

import statistics
from typing import Any

from specdiag.errors import UsageError

CONTEXT_TOKENS = 64  # cached context before the timed pass, a typical mid-generation state


def profile_costs(
    pair: Any,
    tau_max: int = 8,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows {batch_size, n_tokens, target_ms, draft_ms_per_token}: medians of `repeats` timed passes each.

    Each pass extends a cache holding CONTEXT_TOKENS random tokens, then rolls it back, as the verify step does.
    draft_ms_per_token is one draft pass producing one token at that batch size.
    """
    import torch

    from replay.cache import forward, new_cache
    from replay.models import position_limit

    limit = position_limit(pair)
    if limit is not None and CONTEXT_TOKENS + tau_max + 1 > limit:
        raise UsageError(
            f"--profile-costs times passes after {CONTEXT_TOKENS} cached tokens, up to {CONTEXT_TOKENS + tau_max + 1}"
            f" positions: the models take {limit}",
            hint="lower --profile-tau-max, or profile larger models",
        )
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(pair.device)
    rows = []
    with torch.inference_mode():
        for batch in batch_sizes:
            ids = torch.randint(
                0, pair.vocab_size, (batch, CONTEXT_TOKENS + tau_max + 1), generator=generator
            )
            caches = {}
            for name, model in (("target", pair.target), ("draft", pair.draft)):
                caches[name] = new_cache()
                forward(model, ids[:, :CONTEXT_TOKENS], caches[name], pair.vocab_size)

            draft_ms = _timed(
                pair.draft,
                caches["draft"],
                ids[:, CONTEXT_TOKENS : CONTEXT_TOKENS + 1],
                device,
                repeats,
                pair.vocab_size,
            )
            for n in range(1, tau_max + 2):
                rows.append(
                    {
                        "batch_size": batch,
                        "n_tokens": n,
                        "target_ms": _timed(
                            pair.target,
                            caches["target"],
                            ids[:, CONTEXT_TOKENS : CONTEXT_TOKENS + n],
                            device,
                            repeats,
                            pair.vocab_size,
                        ),
                        "draft_ms_per_token": draft_ms,
                    }
                )
    return rows


def _timed(model: Any, cache: Any, new_ids: Any, device: Any, repeats: int, vocab_size: int) -> float:
    """Median ms of one forward pass over new_ids (B, n) on top of the cached context (one untimed warm-up)."""
    from replay.cache import forward, rollback
    from replay.timing import StageClock

    length = cache.get_seq_length()
    forward(model, new_ids, cache, vocab_size)
    rollback(cache, length)
    clock = StageClock(device)
    for r in range(repeats):
        with clock.measure("pass", r):
            forward(model, new_ids, cache, vocab_size)
        rollback(cache, length)
    return statistics.median(clock.resolve().values())
