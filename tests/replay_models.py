"""Tiny random Llama pairs for the replay tests, on the device the tests run on.

The replay tests run on the CPU by default. `SPECDIAG_TEST_DEVICE=cuda pytest tests/test_replay_engine.py
tests/test_replay_batch.py tests/test_replay_rules.py` runs the same assertions on a GPU (CUDA kernels, CUDA-event
timing, CUDA generators). Models are built and perturbed on the CPU first, so both devices test the same weights.
"""

from __future__ import annotations

import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

DEVICE = torch.device(os.environ.get("SPECDIAG_TEST_DEVICE", "cpu"))
VOCAB = 48


def _built(seed: int, attn: str) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.4, eos_token_id=None,
        bos_token_id=None, pad_token_id=0, attn_implementation=attn,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny(seed: int, attn: str = "sdpa") -> LlamaForCausalLM:
    return _built(seed, attn).to(DEVICE)  # type: ignore[arg-type]


def perturbed(target: LlamaForCausalLM) -> LlamaForCausalLM:
    """A copy of `target` with 2% Gaussian noise on every weight: a draft that agrees partially."""
    draft = _built(0, target.config._attn_implementation)
    draft.load_state_dict(target.state_dict())
    torch.manual_seed(7)
    with torch.no_grad():
        for w in draft.parameters():
            w.add_(0.02 * torch.randn_like(w) * w.std())
    return draft.to(DEVICE)  # type: ignore[arg-type]


def generator(seed: int) -> torch.Generator:
    """A seeded generator on the test device (the loop draws on the models' device)."""
    return torch.Generator(DEVICE).manual_seed(seed)
