"""The KV cache operations the loop needs: a fresh cache, a cached forward pass, and rollback."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


_CACHE_KWARG: dict[type, str] = {}


def _cache_kwarg(model_class: type) -> str:
    # transformers >= 5.x names the argument `cache`; earlier releases `past_key_values`.
    if model_class not in _CACHE_KWARG:
        params = inspect.signature(getattr(model_class, "forward")).parameters  # noqa: B009
        _CACHE_KWARG[model_class] = "cache" if "cache" in params else "past_key_values"
    return _CACHE_KWARG[model_class]


def forward(model: Any, token_ids: list[int] | torch.Tensor, cache: Any, vocab_size: int) -> torch.Tensor:
    """Feed tokens (T,) or (B, T) through the model, extending its cache; returns float32 logits (B, T, vocab_size)."""
    ids = token_ids if isinstance(token_ids, torch.Tensor) else torch.tensor(token_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    ids = ids.to(model.device)
    out = model(input_ids=ids, use_cache=True, **{_cache_kwarg(type(model)): cache})
    return out.logits[..., :vocab_size].float()


def rollback(cache: Any, length: int) -> None:
    """Keep the first `length` positions of the cache (transformers' crop takes minus the tokens to remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)
