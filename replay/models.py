"""Loading the target/draft pair from local Hugging Face folders, and comparing their tokenizers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specdiag.errors import DependencyError, UsageError

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class Pair:
    target: Any
    draft: Any
    tokenizer: Any | None  # the target's (None when neither folder has one: prompts must then be token ids)
    target_name: str
    draft_name: str
    device: str
    dtype: str
    vocab_size: int  # logits are compared over the ids both models have
    tokenizer_warning: str | None
    eos_token_id: int | None


def position_limit(pair: Pair) -> int | None:
    """The most positions (prompt + output) both models take, from their configs; None when neither says."""
    limits = [
        value
        for model in (pair.target, pair.draft)
        for name in ("max_position_embeddings", "n_positions")
        if isinstance(value := getattr(model.config, name, None), int)
    ]
    return min(limits) if limits else None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is available", hint="use --device cpu")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return device


def _load_model(folder: Path, device: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bars would interleave with ours on stderr
    if not (folder / "config.json").is_file():
        raise DependencyError(
            f"{folder}: not a model folder (no config.json)",
            hint="pass a local Hugging Face folder, or `demo` for the built-in pair",
        )
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: truncated or corrupt weights
        raise DependencyError(f"{folder}: cannot load model: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval()  # type: ignore[arg-type]


def _load_tokenizer(folder: Path) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None  # a folder without tokenizer files: prompt_ids still work


def compare_tokenizers(target: Any | None, draft: Any | None) -> str | None:
    """A one-line explanation when the two tokenizers differ (different vocabularies alone explain low acceptance)."""
    if target is None or draft is None:
        return None
    tv, dv = target.get_vocab(), draft.get_vocab()
    if tv == dv:
        return None
    shared = set(tv) & set(dv)
    moved = sum(1 for tok in shared if tv[tok] != dv[tok])
    return (
        f"target and draft tokenizers differ: {len(tv)} vs {len(dv)} tokens, {len(set(tv) ^ set(dv))} only in one, "
        f"{moved} shared tokens with different ids; acceptance is meaningless across vocabularies"
    )


def load_pair(
    target: str, draft: str, device: str = "auto", dtype: str = "float32", progress: bool = False
) -> Pair:
    """`demo` (for either) means the built-in demo pair, trained on first use."""
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    device = resolve_device(device)
    if "demo" in (target, draft):
        from replay.demo_pair import ensure_demo_pair

        demo_target, demo_draft = ensure_demo_pair(progress=progress)
        target = str(demo_target) if target == "demo" else target
        draft = str(demo_draft) if draft == "demo" else draft
    t_dir, d_dir = Path(target), Path(draft)
    t_model, d_model = _load_model(t_dir, device, dtype), _load_model(d_dir, device, dtype)
    t_tok, d_tok = _load_tokenizer(t_dir), _load_tokenizer(d_dir)
    warning = compare_tokenizers(t_tok, d_tok)
    vocab = min(
        t_model.get_output_embeddings().weight.shape[0], d_model.get_output_embeddings().weight.shape[0]
    )
    if warning is None and t_model.config.vocab_size != d_model.config.vocab_size:
        warning = (
            f"target and draft vocabulary sizes differ ({t_model.config.vocab_size} vs "
            f"{d_model.config.vocab_size}); comparing the first {vocab} ids"
        )
    eos = getattr(t_model.generation_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return Pair(t_model, d_model, t_tok or d_tok, target, draft, device, dtype, vocab, warning, eos)
