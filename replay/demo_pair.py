"""The built-in demo pair: a byte-level target and a much smaller draft, trained here on the Python standard library.

Every machine with Python has the same training text (the stdlib's `.py` sources: code plus docstring prose), so
the pair is reproducible without downloads: fixed recipe, fixed seed, fixed data order. The draft learns Python's
regular structure (indentation, keywords, brackets) almost as well as the target but English prose much worse, and
neither has seen other scripts or random bytes: acceptance differs by domain, which is what replay is for.

Trained on first use and cached under `$SPECDIAG_CACHE/demo-pair` (default `~/.cache/specdiag/demo-pair`), in a
folder keyed by the recipe and the Python version (whose stdlib is the corpus).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EOS = "<|endoftext|>"  # id 256
PAD = "<|pad|>"  # id 257
VOCAB_SIZE = 258


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    intermediate: int


@dataclass(frozen=True)
class Recipe:
    target: ModelShape = ModelShape(hidden=192, layers=4, heads=4, intermediate=512)
    draft: ModelShape = ModelShape(hidden=64, layers=1, heads=2, intermediate=172)
    target_steps: int = 300
    draft_steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    corpus_bytes: int = 4_000_000
    seed: int = 0

    def key(self) -> str:
        """Cache key: the recipe and the Python version (its stdlib is the corpus)."""
        text = json.dumps(asdict(self), sort_keys=True) + sys.version.split()[0]
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("SPECDIAG_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "specdiag") / "demo-pair"


def ensure_demo_pair(progress: bool = False, recipe: Recipe | None = None) -> tuple[Path, Path]:
    """(target_dir, draft_dir) of the cached demo pair, training it first if needed (a few minutes on 2 cores)."""
    recipe = recipe or Recipe()
    folder = cache_root() / recipe.key()
    if (folder / "target" / "config.json").is_file() and (folder / "draft" / "config.json").is_file():
        return folder / "target", folder / "draft"
    from specdiag.output import message

    message(f"training the demo model pair into {folder} (first use only)")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    train_demo_pair(tmp, recipe, progress=progress)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(folder)  # atomic: a concurrent trainer that finished first wins
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "target", folder / "draft"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (what a byte-level BPE uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer() -> Any:
    """A PreTrainedTokenizerFast whose token id is the byte value (0..255), plus EOS = 256 and PAD = 257."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab.update({EOS: 256, PAD: 257})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def read_corpus(limit: int) -> bytes:
    """The stdlib's .py files in sorted path order (tests and site-packages excluded), up to `limit` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.rglob("*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"site-packages", "test", "tests", "idlelib", "__pycache__"}:
            continue
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= limit:
            break
    return b"\n".join(chunks)[:limit]


def _config(shape: ModelShape, recipe: Recipe) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=max(1024, 4 * recipe.seq_len),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=256,
        pad_token_id=257,
    )


def train_model(shape: ModelShape, steps: int, data: Any, recipe: Recipe, label: str, progress: bool) -> Any:
    """Next-byte prediction with AdamW and a cosine schedule; batches drawn from a seeded generator."""
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(_config(shape, recipe))
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.01)
    warm = max(1, steps // 20)  # linear warm-up over 5% of the steps, then cosine decay to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * s / max(steps, 1)))
    )
    rng = np.random.default_rng(recipe.seed)
    model.train()
    with _bar(progress, f"training demo {label}", steps) as advance:
        for _ in range(steps):
            starts = rng.integers(0, len(data) - recipe.seq_len - 1, size=recipe.batch_size)
            batch = torch.from_numpy(
                np.stack([data[s : s + recipe.seq_len + 1] for s in starts]).astype(np.int64)
            )
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone(), use_cache=False).loss
            # labels are shifted inside the model: position t predicts byte t + 1
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            advance(loss.item())
    return model.eval()


def train_demo_pair(out: Path, recipe: Recipe | None = None, progress: bool = False) -> dict[str, Any]:
    """Train and save both models and the tokenizer into out/target and out/draft; returns the training summary."""
    import numpy as np

    recipe = recipe or Recipe()
    started = time.perf_counter()
    data = np.frombuffer(read_corpus(recipe.corpus_bytes), dtype=np.uint8)
    tokenizer = build_tokenizer()
    summary: dict[str, Any] = {"recipe": asdict(recipe), "corpus_bytes": int(data.size)}
    for label, shape, steps in (
        ("target", recipe.target, recipe.target_steps),
        ("draft", recipe.draft, recipe.draft_steps),
    ):
        t0, cpu0 = time.perf_counter(), time.process_time()
        model = train_model(shape, steps, data, recipe, label, progress)
        model.generation_config.eos_token_id = 256
        model.generation_config.pad_token_id = 257
        model.save_pretrained(out / label)
        tokenizer.save_pretrained(out / label)
        summary[label] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_s": round(time.perf_counter() - t0, 1),
            "train_cpu_s": round(time.process_time() - cpu0, 1),  # all threads: the wall time on an idle box
        }
    summary["total_s"] = round(time.perf_counter() - started, 1)
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return summary


class _bar:
    """A rich progress bar on stderr showing the running loss (or nothing when progress is off)."""

    def __init__(self, show: bool, description: str, total: int) -> None:
        self.show, self.description, self.total = show, description, total

    def __enter__(self) -> Any:
        if not self.show:
            return lambda loss: None
        from rich.progress import Progress

        from specdiag.output import err_console

        self.progress = Progress(console=err_console, transient=True)
        self.progress.start()
        task = self.progress.add_task(self.description, total=self.total)

        def advance(loss: float) -> None:
            self.progress.update(task, advance=1, description=f"{self.description} (loss {loss:.2f})")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.show:
            self.progress.stop()
