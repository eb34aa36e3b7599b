"""Token fates on the one layer loop: ``copy`` reproduces the engine it replaced (tests/reference_engine.py, a
frozen copy); ``drop`` equals the full model when nothing stops, equals its dense masked definition, does not
depend on batch neighbours, and attends to fewer keys; the analytic FLOPs of every fate equal torch's counter."""

from __future__ import annotations

import pytest
import reference_engine as old
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_classification_engine import POLICIES as CLASSIFY_POLICIES
from test_classification_engine import classifier
from test_classification_engine import random_batch as classify_batch
from test_early_exit import RandomExit, encoder, random_batch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tokexit.engine import early_exit_forward
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.exits import NoExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.fates import Drop, HaltAndCopy

FATES = {"copy": HaltAndCopy(), "drop": Drop()}


def run(enc, policy, batch, fate=None):
    return early_exit_forward(enc, policy, batch["input_ids"], batch["attention_mask"], batch["word_positions"],
                              batch["token_word"], fate=fate)


def policies(seed: int) -> list:
    return [TokenWindowExit(0.3, window=3), TokenWindowExit(0.6, window=1), SentenceExit(0.4), StaticExit(2),
            RandomExit(0.4, seed), NoExit()]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.integers(1, 12), st.integers(0, 10_000))
def test_copy_reproduces_the_previous_engine(b, max_words, seed):
    """Same predictions, exit layers, tokens computed and FLOPs as the inline halt-and-copy loop it replaced;
    the same states (bit for bit while the old loop took the same path: it never dropped finished sentences
    from its batch, so it ran the packed path where the new loop runs the dense one on what is left)."""
    enc, batch = encoder(seed % 5), random_batch(b, max_words, seed)
    real = batch["attention_mask"].bool()
    for new_policy, old_policy in zip(policies(seed), policies(seed), strict=True):
        new = run(enc, new_policy, batch)
        ref = old.early_exit_forward(enc, old_policy, batch["input_ids"], batch["attention_mask"],
                                     batch["word_positions"], batch["token_word"])
        assert torch.equal(new.predictions, ref.predictions)
        assert torch.equal(new.exit_layers, ref.exit_layers)
        assert len(new.token_active) == len(ref.token_active)
        assert all(torch.equal(a, r) for a, r in zip(new.token_active, ref.token_active, strict=True))
        assert torch.equal(new.flops, ref.flops)
        assert (new.hidden - ref.hidden)[real].abs().max() <= 1e-6


def test_copy_states_are_bit_identical_for_token_window():
    """Where both loops take the same path (token window: sentences rarely finish before their neighbours do
    at these thresholds), the states are equal bit for bit."""
    enc = encoder(0)
    checked = 0
    for seed in range(20):
        batch = random_batch(6, 12, seed)
        new = run(enc, TokenWindowExit(0.3, window=3), batch)
        ref = old.early_exit_forward(enc, TokenWindowExit(0.3, window=3), batch["input_ids"],
                                     batch["attention_mask"], batch["word_positions"], batch["token_word"])
        same_path = all(bool(a.any(1).all()) for a in ref.token_active)  # no sentence finished early
        if same_path:
            checked += 1
            assert torch.equal(new.hidden, ref.hidden)
    assert checked >= 3


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(sorted(CLASSIFY_POLICIES)), st.integers(1, 10), st.integers(0, 10_000),
       st.sampled_from(["cls", "mean"]))
def test_classification_reproduces_the_previous_engine_bit_for_bit(name, b, seed, pooling):
    model, batch = classifier(pooling=pooling), classify_batch(b, seed)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    ref = old.classify_early_exit(model, CLASSIFY_POLICIES[name], *args)
    for fate in (None, Drop()):  # an example stops whole: both fates are the same there
        new = classify_early_exit(model, CLASSIFY_POLICIES[name], *args, fate=fate)
        assert torch.equal(new.logits, ref.logits)
        assert torch.equal(new.exit_layers, ref.exit_layers)
        assert torch.equal(new.flops, ref.flops)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000))
def test_drop_at_threshold_zero_equals_the_full_model(b, max_words, seed):
    enc, batch = encoder(seed % 7), random_batch(b, max_words, seed)
    with torch.no_grad():
        full = enc(batch["input_ids"], batch["attention_mask"], batch["word_positions"])[-1]  # (N, C)
    words = batch["word_positions"] >= 0
    for policy in (TokenWindowExit(0.0, window=3), SentenceExit(0.0), NoExit()):
        out = run(enc, policy, batch, Drop())
        assert torch.equal(out.predictions[words], full.argmax(-1))
        assert (out.exit_layers[words] == 4).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.floats(0.0, 0.9), st.integers(0, 10_000))
def test_drop_equals_its_dense_masked_definition(b, max_words, p, seed):
    """Packed drop == h <- m*Layer(h; keys = m) + (1-m)*h computed densely: stopped tokens are no keys."""
    enc, batch = encoder(), random_batch(b, max_words, seed)
    out = run(enc, RandomExit(p, seed), batch, Drop())
    masks = torch.stack(out.token_active + [out.token_active[-1] & False] * (4 - len(out.token_active)))
    assert all(torch.equal(k, c) for k, c in zip(out.record.keys, out.record.computed, strict=True))
    with torch.no_grad():
        dense = enc.hidden_states(batch["input_ids"], batch["attention_mask"], token_masks=masks, fate=Drop())[-1]
        as_copy = enc.hidden_states(batch["input_ids"], batch["attention_mask"], token_masks=masks)[-1]
    real = batch["attention_mask"].bool()
    assert (dense - out.hidden)[real].abs().max() <= 1e-5
    mixed = any(bool((c.any(1) & (real & ~c).any(1)).any()) for c in out.token_active[1:])
    if mixed:  # some sentence went on without some of its tokens: as keys, they changed its states
        assert (as_copy - out.hidden)[real].abs().max() > 1e-6


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.floats(0.05, 0.6), st.sampled_from([1, 3, 5, 7]),
       st.integers(0, 10_000))
def test_drop_does_not_depend_on_batch_neighbours(b, max_words, threshold, window, seed):
    enc, batch = encoder(seed % 5), random_batch(b, max_words, seed)
    for policy in (TokenWindowExit(threshold, window=window), SentenceExit(threshold)):
        together = run(enc, policy, batch, Drop())
        for i in range(b):
            t, w = int(batch["attention_mask"][i].sum()), int((batch["word_positions"][i] >= 0).sum())
            alone = run(enc, policy, {k: v[i : i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()},
                        Drop())
            assert torch.equal(alone.predictions[0], together.predictions[i, :w])
            assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
            assert torch.allclose(alone.flops[0], together.flops[i])


@pytest.mark.parametrize("fate", sorted(FATES))
def test_flops_of_every_fate_match_torch_flop_counter(fate):
    """At batch size 1 nothing is padded, so the analytic count of the loop's record is exactly what runs."""
    enc = encoder()
    seen_stops = 0
    for t, seed in ((9, 1), (23, 2), (40, 3)):
        batch = random_batch(1, t, seed)
        for policy in (RandomExit(0.4, seed), TokenWindowExit(0.5, window=1), StaticExit(2)):
            with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                out = run(enc, policy, batch, FATES[fate])
            assert int(out.flops[0]) == counter.get_total_flops(), (fate, t, policy.name)
            seen_stops += int(any(bool((a != batch["attention_mask"].bool()).any()) for a in out.token_active))
    assert seen_stops >= 3  # the counts covered runs where tokens really stopped


def test_drop_attends_to_fewer_keys_than_copy():
    enc, batch = encoder(), random_batch(5, 12, seed=3)
    copy, drop = run(enc, StaticExit(2), batch), run(enc, RandomExit(0.5, 3), batch, Drop())
    assert all(torch.equal(k, batch["attention_mask"].bool()) for k in copy.record.keys)
    later = [k.sum() for k, c in zip(drop.record.keys, drop.record.computed, strict=True)][1:]
    assert all(int(k) < int(batch["attention_mask"].sum()) for k in later)
