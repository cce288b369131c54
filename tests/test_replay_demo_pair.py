"""The demo pair's recipe on a tiny scale: byte tokenizer, deterministic training, caching (the full pair is not
trained in tests)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import demo_pair
from replay.demo_pair import (
    SCRIPTS,
    ModelShape,
    Recipe,
    build_tokenizer,
    ensure_demo_pair,
    read_corpus,
    train_demo_pair,
    transliterate,
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


def test_corpus_carries_the_requested_share_of_other_scripts_as_valid_utf8():
    recipe = Recipe()
    assert read_corpus(300_000, recipe.script_share) == read_corpus(
        300_000, recipe.script_share
    )  # deterministic
    corpus = read_corpus(recipe.corpus_bytes, recipe.script_share)  # what the demo pair trains on
    assert len(corpus) == recipe.corpus_bytes and b"def " in corpus
    text = corpus[:-4].decode("utf-8", errors="strict")  # the cut at `limit` may split the last character
    non_ascii = float(np.mean(np.frombuffer(corpus, dtype=np.uint8) >= 0x80))
    assert 0.5 * recipe.script_share < non_ascii < 1.5 * recipe.script_share
    counts = Counter(text)
    for (
        name,
        alphabet,
    ) in SCRIPTS.items():  # every script is in the training text (file order decides how much)
        assert sum(counts[ch] for ch in alphabet) > 1000, name
    plain = np.frombuffer(read_corpus(200_000, 0.0), dtype=np.uint8)
    assert np.mean(plain >= 0x80) < 0.01  # the stdlib's sources alone are (almost) pure ASCII


def test_transliteration_is_letter_for_letter_and_keeps_everything_else():
    for name, alphabet in SCRIPTS.items():
        assert len(set(alphabet)) == 26, name  # a bijection from a..z
        assert transliterate("abc xyz", name) == f"{alphabet[:3]} {alphabet[23:]}"
        out = transliterate("def f(x=1):  # Return 2.", name)
        assert len(out) == len("def f(x=1):  # Return 2.")
        assert [c for c in out if not c.isalpha()] == [
            c for c in "def f(x=1):  # Return 2." if not c.isalpha()
        ]
    assert transliterate("Hello", "cyrillic") == "Здлло" and transliterate("Hello", "greek") == "Θεμμο"


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40), st.sampled_from(sorted(SCRIPTS)))
def test_transliterated_text_has_no_latin_letters_left(text, script):
    out = transliterate(text, script)
    assert len(out) == len(text)
    assert not any(c.isascii() and c.isalpha() for c in out)
    out.encode("utf-8")  # always encodable


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


def test_the_cache_key_changes_with_the_corpus():
    assert Recipe(corpus_version=1).key() != Recipe().key()
    assert Recipe(script_share=0.0).key() != Recipe().key()
