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


def forward(
    model: Any,
    token_ids: list[int] | torch.Tensor,
    cache: Any,
    vocab_size: int,
    *,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Feed tokens (T,) or (B, T) through the model, extending its cache; returns float32 logits (B, T, vocab_size).

    Batch 1 needs neither mask nor positions (the cache length is the position). Batched rows with holes pass
    attention_mask (B, cached + T; 0 = hole) and position_ids (B, T; each row's own positions): see replay.batch.
    """
    ids = token_ids if isinstance(token_ids, torch.Tensor) else torch.tensor(token_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    ids = ids.to(model.device)
    extra = {}
    if attention_mask is not None:
        extra["attention_mask"] = attention_mask.to(model.device)
    if position_ids is not None:
        extra["position_ids"] = position_ids.to(model.device)
    out = model(input_ids=ids, use_cache=True, **{_cache_kwarg(type(model)): cache}, **extra)
    return out.logits[..., :vocab_size].float()


def rollback(cache: Any, length: int) -> None:
    """Keep the first `length` positions of the cache (transformers' crop takes minus the tokens to remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _packable(cache: Any) -> bool:
    """A cache whose layers are plain key/value tensors (B, heads, slots, dim) that slot gathers may rearrange."""
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(
        type(layer).__name__ == "DynamicLayer" and getattr(layer, "keys", None) is not None
        for layer in layers
    )


class RaggedCache:
    """One rectangular DynamicCache shared by B rows that hold different numbers of tokens.

    Slots (the cache's sequence axis) are shared; a slot a row does not use is a *hole*: right padding of a shorter
    chunk, a rejected draft token, or tokens past a rollback. `valid` (B, S) marks each row's real tokens. Every
    forward pass hands the model the 2-D attention mask `valid` (holes are never attended to) and each row's own
    logical positions (its count of valid slots so far: holes take no position), so a row sees exactly its own
    tokens at their own positions, as it would alone. Holes cost memory and attention FLOPs, never correctness;
    `compact` packs rows when holes fill over half the cache and crops trailing slots no row uses.
    """

    def __init__(self, rows: int, device: torch.device) -> None:
        self.kv = new_cache()
        self.valid = torch.zeros((rows, 0), dtype=torch.bool, device=device)

    def lengths(self) -> list[int]:
        """Tokens each row holds (its next token's position)."""
        return [int(n) for n in self.valid.sum(-1)]

    def forward(self, model: Any, chunks: list[list[int]], vocab_size: int, pad_id: int = 0) -> torch.Tensor:
        """Append chunk i to row i, right-padded with holes to one width W; returns logits (B, W, vocab_size), of
        which row i's first len(chunk i) are real. Row i's tokens take positions lengths[i] .. lengths[i] + len - 1.
        """
        width = max(len(c) for c in chunks)
        device = self.valid.device
        if width == 0:
            return torch.zeros((len(chunks), 0, vocab_size), device=device)
        ids = torch.tensor([c + [pad_id] * (width - len(c)) for c in chunks], dtype=torch.long, device=device)
        sizes = torch.tensor([len(c) for c in chunks], device=device)
        new_valid = torch.arange(width, device=device) < sizes[:, None]  # (B, W)
        # (B, W) each row's own positions: its count of valid slots so far. A hole's position is unused, but it must
        # stay within the positions the model has (learned position embeddings, as GPT-2's, index a table with it):
        # a hole repeats the row's last real position instead of counting on past it.
        last = (sizes[:, None] - 1).clamp_min(0)
        positions = self.valid.sum(-1, keepdim=True) + torch.minimum(torch.arange(width, device=device), last)
        mask = torch.cat([self.valid, new_valid], dim=1)  # (B, S + W)
        logits = forward(model, ids, self.kv, vocab_size, attention_mask=mask.long(), position_ids=positions)
        self.valid = mask
        return logits

    def keep(self, lengths: torch.Tensor) -> None:
        """Roll row b back to its first lengths[b] tokens: its later valid slots become holes."""
        self.valid &= self.valid.cumsum(-1) <= lengths.to(self.valid.device)[:, None]

    def compact(self) -> None:
        """Crop the trailing slots that no row uses; when holes fill over half the slots, pack each row's tokens to
        the front first. Packing keeps each row's token order and its (logical) positions, which the keys carry
        (rotary embeddings), so attention is unchanged: new tokens still come after every packed slot."""
        if 2 * int(self.valid.sum()) < self.valid.numel() and _packable(self.kv):
            counts = self.valid.sum(-1, keepdim=True)
            # (B, S) per row: its valid slots first, in their order, then its holes
            order = torch.sort((~self.valid).to(torch.int8), dim=-1, stable=True).indices
            for layer in self.kv.layers:
                index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
                layer.keys, layer.values = layer.keys.gather(2, index), layer.values.gather(2, index)
            self.valid = torch.arange(self.valid.shape[1], device=self.valid.device) < counts
        used = self.valid.any(0).nonzero()
        size = int(used.max()) + 1 if used.numel() else 0
        rollback(self.kv, size)
        self.valid = self.valid[:, :size]

    def select(self, rows: list[int]) -> None:
        """Keep only these rows (in this order): finished rows leave the batch and stop costing compute."""
        index = torch.tensor(rows, dtype=torch.long, device=self.valid.device)
        if self.kv.get_seq_length() > 0:
            self.kv.batch_select_indices(index)
        self.valid = self.valid[index]
