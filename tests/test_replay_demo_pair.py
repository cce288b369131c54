"""The demo pair's recipe on a tiny scale: byte tokenizer, deterministic training, caching (the full pair is not
trained in tests)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import demo_pair
from replay.demo_pair import (
    ModelShape,
    Recipe,
    build_tokenizer,
    ensure_demo_pair,
    read_corpus,
    train_demo_pair,
)

TINY = Recipe(
    target=ModelShape(hidden=32, layers=1, heads=2, intermediate=64),
    draft=ModelShape(hidden=16, layers=1, heads=2, intermediate=32),
    target_steps=3,
    draft_steps=3,
    batch_size=2,
    seq_len=16,
    corpus_bytes=20_000,
)

TOKENIZER = build_tokenizer()


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_token_ids_are_the_utf8_bytes_and_decode_back(text):
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode("utf-8"))
    assert TOKENIZER.decode(ids) == text


def test_corpus_is_python_source_and_deterministic():
    a, b = read_corpus(50_000), read_corpus(50_000)
    assert a == b and len(a) == 50_000
    assert b"def " in a and b'"""' in a  # code and docstring prose


def test_training_is_deterministic_and_saves_loadable_models(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = train_demo_pair(tmp_path / "a", TINY)
    train_demo_pair(tmp_path / "b", TINY)
    assert summary["target"]["parameters"] > summary["draft"]["parameters"]
    for name in ("target", "draft"):
        ma = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / name, local_files_only=True)
        mb = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / name, local_files_only=True)
        for (ka, va), (_, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
            assert torch.equal(va, vb), ka
        tok = AutoTokenizer.from_pretrained(tmp_path / "a" / name, local_files_only=True)
        assert tok("é")["input_ids"] == [0xC3, 0xA9] and tok.eos_token_id == 256


def test_ensure_trains_once_then_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECDIAG_CACHE", str(tmp_path))
    target, draft = ensure_demo_pair(recipe=TINY)
    assert target.parent.parent == tmp_path / "demo-pair" and (target / "config.json").is_file()
    monkeypatch.setattr(
        demo_pair, "train_demo_pair", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained"))
    )
    assert ensure_demo_pair(recipe=TINY) == (target, draft)
    assert Recipe().key() != TINY.key()  # a different recipe gets its own folder
