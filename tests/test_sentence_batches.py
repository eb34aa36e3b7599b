"""``sentence_batches`` (the inference data path of ``Tagger.tag`` and ``tokexit.tag``): its vectorised fast path
gives bit-identical batches to the general path (``encode_batch`` rows, stably length-sorted, padded by the loop
``reference_collate``), on random sentences with empty sentences, words the tokenizer maps to nothing, very long
words, sentences that need windows and unicode; every word of every sentence is owned by exactly one input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_collate import assert_same, random_rows, reference_collate

from tokexit.backbones import load_tokenizer
from tokexit.data import encoding
from tokexit.data.encoding import EncodedRows, encode_batch, encode_sentences, rust_tokenizer, tokenize_words
from tokexit.data.tagging import collate, padded_batches
from tokexit.inference.tagging import sentence_batches

NOTHING = ["\u200b", "\x00", "\x07", "\ufeff", " ", ""]  # words MiniLM's tokenizer maps to no subword
WORDS = ["the", "EU", "rejects", "German", "call", ".", "1996-08-22", "Straße", "東京", "😀", "e\u0301", "naïve",
         "[SEP]", "##ing", "antidisestablishmentarianism", "a" * 90, "x" * 120, "ab" * 40]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


def general_batches(sentences: list[list[str]], tokenizer, batch_size: int, max_length: int) -> list[dict]:
    """What ``sentence_batches`` gave before its fast path: every sentence through ``encode_batch``."""
    columns = encode_batch({"words": sentences, "tags": [None] * len(sentences),
                            "sentence_id": list(range(len(sentences)))},
                           tokenizer=tokenizer, label_to_id=None, max_length=max_length, context="sentence")
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    rows.sort(key=lambda row: len(row["input_ids"]))
    return [reference_collate(rows[i:i + batch_size], tokenizer.pad_token_id) for i in range(0, len(rows), batch_size)]


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert_same(x, y)


def assert_every_word_once(batches: list[dict], sentences: list[list[str]]) -> None:
    owners: dict[tuple[int, int], int] = {}
    for batch in batches:
        owned = batch["owned"]
        for s, j in zip(batch["word_sentence"][owned].tolist(), batch["word_index"][owned].tolist(), strict=True):
            owners[s, j] = owners.get((s, j), 0) + 1
        lengths = batch["attention_mask"].sum(1, keepdim=True)
        positions = batch["word_positions"]
        real = positions >= 0
        assert ((positions[real] >= 1) & (positions < lengths - 1)[real]).all()  # a subword, not a special token
    assert owners == {(s, j): 1 for s, words in enumerate(sentences) for j in range(len(words))}


word = st.one_of(st.sampled_from(WORDS), st.sampled_from(NOTHING),
                 st.text(min_size=1, max_size=12), st.text(st.characters(max_codepoint=127), min_size=1, max_size=30))
sentence = st.one_of(st.lists(st.sampled_from(WORDS), max_size=12), st.lists(word, max_size=40))


@settings(max_examples=120, deadline=None)
@given(sentences=st.lists(sentence, max_size=12), max_length=st.sampled_from([6, 12, 24, 64, 512]),
       batch_size=st.sampled_from([1, 3, 32]))
def test_fast_path_equals_general_path(tokenizer, sentences, max_length, batch_size):
    batches = sentence_batches(sentences, tokenizer, batch_size, max_length)
    assert_same_batches(batches, general_batches(sentences, tokenizer, batch_size, max_length))
    assert_every_word_once(batches, sentences)


def test_conll_like_sentences_equal_and_take_the_fast_path(tokenizer, monkeypatch):
    rng = random.Random(0)
    sentences = [[rng.choice(WORDS[:14]) for _ in range(rng.randint(1, 30))] for _ in range(200)] + [[]]
    expected = {b: general_batches(sentences, tokenizer, b, 128) for b in (1, 7, 32, 500)}
    monkeypatch.setattr(encoding, "encode_pieces", None)  # the general path would fail: none is taken
    for b, want in expected.items():
        assert_same_batches(sentence_batches(sentences, tokenizer, b, 128), want)


@pytest.mark.parametrize("odd", [["\u200b"], ["x", "\x00", "y"], ["long"] * 200, ["a" * 90], ["ab" * 40, "the"]])
def test_odd_sentences_take_the_general_path(tokenizer, monkeypatch, odd):
    """[UNK] for a word of no subword, windows, a word cut to the budget: only those sentences go the general way."""
    sentences = [["The", "EU", "."], odd, ["Peter", "Blackburn"], odd]
    assert tokenizer([["\u200b", "\x00"]], is_split_into_words=True, add_special_tokens=False)["input_ids"] == [[]]
    want = general_batches(sentences, tokenizer, 2, 32)
    seen = []
    general = encoding.encode_pieces
    monkeypatch.setattr(encoding, "encode_pieces", lambda batch, *a, **k: seen.append(batch["sentence_id"])
                        or general(batch, *a, **k))
    assert_same_batches(sentence_batches(sentences, tokenizer, 2, 32), want)
    assert seen == [[1, 3]]


def test_encode_sentences_gives_encode_batch_rows(tokenizer):
    sentences = [["Japan", "began", "the", "defence"], [], ["\u200b", "a" * 90] * 9, ["x"] * 40, ["Nadim", "Ladki"]]
    columns = encode_batch({"words": sentences, "tags": [None] * 5, "sentence_id": list(range(5))},
                           tokenizer=tokenizer, label_to_id=None, max_length=16, context="sentence")
    want, got = EncodedRows.from_columns(columns), encode_sentences(sentences, tokenizer, 16)
    for name in EncodedRows.__dataclass_fields__:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert getattr(got, name).dtype == np.int64, name


@settings(max_examples=60, deadline=None)
@given(sentences=st.lists(sentence, min_size=1, max_size=8))
def test_tokenize_words_is_the_tokenizer_call(tokenizer, sentences):
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    assert rust_tokenizer(tokenizer) is tokenizer.backend_tokenizer  # MiniLM's: read straight from Rust
    assert tokenize_words(tokenizer, sentences) == (encoded["input_ids"],
                                                    [encoded.word_ids(i) for i in range(len(sentences))])


def test_rust_tokenizer_only_where_the_call_adds_nothing(monkeypatch):
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tokenizer = load_tokenizer("minilm-l6")
    sentences = [["antidisestablishmentarianism", "Straße"], ["\u200b", "x"]]
    tokenizer.backend_tokenizer.no_padding()  # (MiniLM's tokenizer.json sets both)
    tokenizer.backend_tokenizer.enable_truncation(3)  # the call clears it before encoding
    assert rust_tokenizer(tokenizer) is None
    through_transformers = tokenize_words(tokenizer, sentences)
    assert len(through_transformers[0][0]) > 3
    assert rust_tokenizer(tokenizer) is tokenizer.backend_tokenizer  # cleared now
    monkeypatch.setattr(TokenizersBackend, "_encode_plus", None)  # transformers' encoding is not used any more
    assert tokenize_words(tokenizer, sentences) == through_transformers
    tokenizer.backend_tokenizer.enable_padding(length=40)
    assert rust_tokenizer(tokenizer) is None


def test_no_sentences(tokenizer):
    assert sentence_batches([], tokenizer, 32, 512) == []
    assert sentence_batches([[], []], tokenizer, 32, 512) == []


@pytest.mark.parametrize("context", ["sentence", "document"])
def test_padded_batches_are_collate_of_each_slice(context):
    rows = random_rows(context, seed=3, max_length=24)
    for r in rows[::4]:  # some rows carry only sentence_id and word_offset
        del r["word_sentence"], r["word_index"]
    encoded = EncodedRows.from_rows(rows)
    for size in (1, 4, len(rows)):
        batches = padded_batches(encoded, size, pad_id=5)
        assert_same_batches(batches, [reference_collate(rows[i:i + size], 5) for i in range(0, len(rows), size)])
        assert_same_batches(batches, [collate(rows[i:i + size], 5) for i in range(0, len(rows), size)])
    assert torch.equal(padded_batches(encoded.take(np.arange(len(rows))[::-1]), 3, 5)[0]["sentence_id"],
                       torch.tensor([r["sentence_id"] for r in rows[::-1][:3]]))
