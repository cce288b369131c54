"""The built-in demo pair: a byte-level target and a much smaller draft, trained here on the Python standard library.

Every machine with Python has the same training text, so the pair is reproducible without downloads: fixed recipe,
fixed seed, fixed data order. The corpus is the stdlib's `.py` sources (code plus docstring prose) and a small share
of the same docstrings transliterated letter for letter into ten other scripts (Cyrillic, Greek, Arabic, Hebrew,
Armenian, Georgian, Devanagari, Hiragana, CJK ideographs, Hangul) with the fixed tables in SCRIPTS. The draft learns
Python's regular structure almost as well as the target, English prose worse, and the rare multi-byte scripts much
worse: acceptance differs by domain, which is what replay is for. Without the transliterated share neither model
had seen a non-ASCII byte, both fell back to the same ASCII continuation after a Russian or Greek prompt and agreed
on it (acceptance 0.90 there, docs/replay.md).

Trained on first use and cached under `$SPECDIAG_CACHE/demo-pair` (default `~/.cache/specdiag/demo-pair`), in a
folder keyed by the recipe (including its corpus version) and the Python version (whose stdlib is the corpus).
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
    script_share: float = 0.25  # share of the corpus bytes that are transliterated docstrings (read_corpus)
    corpus_version: int = 2  # bump when read_corpus changes: the cache key hashes the recipe
    seed: int = 0

    def key(self) -> str:
        """Cache key: the recipe (corpus version and script share included) and the Python version (its stdlib is
        the corpus)."""
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


# Letter-for-letter transliteration tables: the n-th Latin letter (a..z) becomes the n-th letter of each alphabet.
# The text stays English underneath, but in the script's UTF-8 bytes (2 bytes a letter for Cyrillic .. Armenian,
# 3 for Georgian .. Hangul), which the stdlib's sources (almost pure ASCII) never show the models.
SCRIPTS: dict[str, str] = {
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщ",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωάέ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنه",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשתםןףץ",
    "armenian": "աբգդեզէըթժիլխծկհձղճմյնշոչպ",
    "georgian": "აბგდევზთიკლმნოპჟრსტუფქღყშჩ",
    "devanagari": "कखगघङचछजझञटठडढणतथदधनपफबभमय",
    "hiragana": "あいうえおかきくけこさしすせそたちつてとなにぬねのは",
    "cjk": "一二三四五六七八九十人大小山川日月火水木金土中上下口",
    "hangul": "가나다라마바사아자차카타파하거너더러머버서어저처커터",
}
_LATIN = "abcdefghijklmnopqrstuvwxyz"


def transliterate(text: str, script: str) -> str:
    """`text` with each ASCII letter replaced by the same-rank letter of `script` (upper case where it has one)."""
    alphabet = SCRIPTS[script]
    table = {ord(a): b for a, b in zip(_LATIN, alphabet)}
    upper = {ord(a.upper()): b.upper() if len(b.upper()) == 1 else b for a, b in zip(_LATIN, alphabet)}
    return text.translate(table | upper)


def docstrings(source: bytes) -> list[str]:
    """The module, class and function docstrings of one Python source file (none if it does not parse)."""
    import ast
    import warnings

    try:
        with (
            warnings.catch_warnings()
        ):  # e.g. invalid escape sequences: the text is data here, not code to run
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]


def stdlib_sources() -> list[Path]:
    """The stdlib's .py files in sorted path order (tests, idlelib and site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "__pycache__"}
    return [p for p in sorted(root.rglob("*.py")) if not set(p.relative_to(root).parts) & skip]


def read_corpus(limit: int, script_share: float = 0.0) -> bytes:
    """The stdlib's .py files in sorted order, up to `limit` bytes, with a `script_share` of the bytes in other scripts.

    After each file, while the transliterated bytes are below `script_share` of the corpus so far, that file's
    docstrings follow, transliterated into the next script of SCRIPTS in turn (file order decides which).
    """
    chunks: list[bytes] = []
    size = script_bytes = turn = 0
    names = list(SCRIPTS)
    for path in stdlib_sources():
        data = path.read_bytes()
        chunks.append(data)
        size += len(data) + 1
        if script_share > 0 and script_bytes < script_share * size:
            docs = docstrings(data)
            if docs:
                text = transliterate("\n\n".join(docs), names[turn % len(names)]).encode("utf-8")
                turn += 1
                chunks.append(text)
                size += len(text) + 1
                script_bytes += len(text) + 1
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
    data = np.frombuffer(read_corpus(recipe.corpus_bytes, recipe.script_share), dtype=np.uint8)
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
