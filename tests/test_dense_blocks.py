"""Small blocks computed whole (``halting.DENSE_ROWS``): the same predictions, exit layers and states as the packed
gather/scatter path, for every fate and exit, taggers and classifiers; and the switch really happens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_classification_engine import POLICIES as CLASSIFY_POLICIES
from test_classification_engine import classifier
from test_classification_engine import random_batch as classify_batch
from test_early_exit import RandomExit, encoder, random_batch
from test_reduce import tagger

from tokexit.engine import early_exit_forward, halting
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.exits import SentenceExit, TokenWindowExit
from tokexit.fates import Drop, HaltAndCopy, TokenReduction

FATES = {"copy": HaltAndCopy, "drop": Drop, "reduce": lambda: TokenReduction(keep_ratio=0.5)}


def tag(enc, policy, batch, fate, dense_rows: int, monkeypatch):
    monkeypatch.setattr(halting, "DENSE_ROWS", dense_rows)
    return early_exit_forward(enc, policy, batch["input_ids"], batch["attention_mask"], batch["word_positions"],
                              batch["token_word"], fate=fate)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.floats(0.05, 0.6), st.integers(0, 10_000),
       st.sampled_from(sorted(FATES)))
def test_dense_blocks_equal_the_packed_path(b, max_words, threshold, seed, fate):
    with pytest.MonkeyPatch.context() as mp:
        enc = tagger() if fate == "reduce" else encoder()
        batch = random_batch(b, max_words, seed)
        words = batch["word_positions"] >= 0
        for make in (lambda: TokenWindowExit(threshold, window=3), lambda: SentenceExit(threshold),
                     lambda: RandomExit(threshold, seed)):  # a fresh policy per run: RandomExit draws
            packed = tag(enc, make(), batch, FATES[fate](), 0, mp)
            dense = tag(enc, make(), batch, FATES[fate](), 1 << 20, mp)
            assert torch.equal(dense.predictions[words], packed.predictions[words])
            assert torch.equal(dense.exit_layers, packed.exit_layers)
            assert torch.allclose(dense.hidden, packed.hidden, atol=1e-5)
            for a, c in zip(dense.record.computed, packed.record.computed, strict=True):  # same FLOPs accounting
                assert torch.equal(a, c)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(sorted(CLASSIFY_POLICIES)), st.integers(1, 6), st.integers(0, 10_000))
def test_dense_blocks_equal_the_packed_path_for_classifiers(name, b, seed):
    model, batch = classifier(), classify_batch(b, seed)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(halting, "DENSE_ROWS", 0)
        packed = classify_early_exit(model, CLASSIFY_POLICIES[name], *args)
        mp.setattr(halting, "DENSE_ROWS", 1 << 20)
        dense = classify_early_exit(model, CLASSIFY_POLICIES[name], *args)
    assert torch.equal(dense.exit_layers, packed.exit_layers)
    assert torch.allclose(dense.logits, packed.logits, atol=1e-5)


@pytest.mark.parametrize("dense_rows, gathers", [(0, True), (1 << 20, False)])
def test_the_threshold_decides_between_gathering_and_whole_blocks(monkeypatch, dense_rows, gathers):
    calls = []
    real_gather = halting.gather_active
    monkeypatch.setattr(halting, "gather_active", lambda *a: calls.append(1) or real_gather(*a))
    batch = random_batch(3, 10, 1)
    tag(encoder(), RandomExit(0.4, seed=0), batch, HaltAndCopy(), dense_rows, monkeypatch)
    assert bool(calls) == gathers

