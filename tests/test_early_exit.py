"""Exactness of early exit: gather/scatter against a dense reference, threshold 0 against the full model,
independence from batch neighbours, the window rule, and the FLOPs counter against torch's flop counter."""

from __future__ import annotations

import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, BertConfig

from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.early_exit import token_activity
from tokexit.engine.flops import full_model_flops
from tokexit.engine.halting import gather_active, scatter_active
from tokexit.exits import NoExit, SentenceExit, StaticExit, TokenWindowExit
from tokexit.exits.base import ExitPolicy
from tokexit.exits.token_window import window_max

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=64)


@functools.cache
def encoder(seed: int = 0, labels: int = 5) -> MultiExitEncoder:
    torch.manual_seed(seed)
    return MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=labels).eval()


def random_batch(b: int, max_words: int, seed: int) -> dict[str, torch.Tensor]:
    """Sentences of 1..max_words words, each word 1-3 subwords, [CLS] ... [SEP], right padding."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(b):
        n_words = int(torch.randint(1, max_words + 1, (1,), generator=g))
        pieces = torch.randint(1, 4, (n_words,), generator=g).tolist()
        positions, ids = [], [2]
        for p in pieces:
            positions.append(len(ids))
            ids += torch.randint(5, 100, (p,), generator=g).tolist()
        rows.append((ids + [3], positions))
    t, w = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    batch = {"input_ids": torch.zeros(b, t, dtype=torch.long), "attention_mask": torch.zeros(b, t, dtype=torch.long),
             "word_positions": torch.full((b, w), -1), "token_word": torch.full((b, t), -1)}
    for i, (ids, positions) in enumerate(rows):
        batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][i, : len(ids)] = 1
        batch["word_positions"][i, : len(positions)] = torch.tensor(positions)
        for j, (s, e) in enumerate(zip(positions, positions[1:] + [len(ids) - 1], strict=True)):
            batch["token_word"][i, s:e] = j
    return batch


def run(enc, policy, batch):
    return early_exit_forward(enc, policy, batch["input_ids"], batch["attention_mask"], batch["word_positions"],
                              batch["token_word"])


class RandomExit(ExitPolicy):
    """Stops a random subset of the active words: exercises gather/scatter with arbitrary patterns."""

    name = "random"

    def __init__(self, p: float, seed: int):
        super().__init__()
        self.p, self.g = p, torch.Generator().manual_seed(seed)

    def decide(self, layer, num_layers, uncertainty, active, words):
        return torch.rand(active.shape, generator=self.g) < self.p


def test_gather_scatter_round_trip():
    hidden = torch.randn(3, 7, 4)
    active = torch.rand(3, 7) < 0.5
    packed, rows, cols = gather_active(hidden, active)
    assert packed.shape == (int(active.sum()), 4)
    assert torch.equal(scatter_active(torch.zeros_like(hidden), rows, cols, packed), hidden * active[..., None])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.floats(0.0, 0.9), st.integers(0, 10_000))
def test_halted_layer_equals_dense_masked_reference(b, max_words, p, seed):
    """The packed gather/scatter path equals h <- m*Layer(h) + (1-m)*h computed densely."""
    enc, batch = encoder(), random_batch(b, max_words, seed)
    out = run(enc, RandomExit(p, seed), batch)
    masks = torch.stack(out.token_active + [out.token_active[-1] & False] * (4 - len(out.token_active)))
    with torch.no_grad():
        dense = enc.hidden_states(batch["input_ids"], batch["attention_mask"], token_masks=masks)[-1]
    real = batch["attention_mask"].bool()
    assert (dense - out.hidden)[real].abs().max() <= 1e-5


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000))
def test_threshold_zero_equals_full_model(b, max_words, seed):
    enc, batch = encoder(seed % 7), random_batch(b, max_words, seed)
    with torch.no_grad():
        full = enc(batch["input_ids"], batch["attention_mask"], batch["word_positions"])[-1]  # (N, C)
        states = enc.hidden_states(batch["input_ids"], batch["attention_mask"])[-1]
    words = batch["word_positions"] >= 0
    for policy in (TokenWindowExit(0.0, window=3), SentenceExit(0.0), NoExit()):
        out = run(enc, policy, batch)
        assert torch.equal(out.predictions[words], full.argmax(-1))
        assert (out.exit_layers[words] == 4).all()
        assert (out.hidden - states)[batch["attention_mask"].bool()].abs().max() <= 1e-5
        logits = enc.exits[-1](out.hidden[words.nonzero(as_tuple=True)[0], batch["word_positions"][words]])
        assert (logits - full).abs().max() <= 1e-5


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.floats(0.05, 0.6), st.sampled_from([1, 3, 5, 7]),
       st.integers(0, 10_000))
def test_exit_does_not_depend_on_batch_neighbours(b, max_words, threshold, window, seed):
    enc, batch = encoder(seed % 5), random_batch(b, max_words, seed)
    for policy in (TokenWindowExit(threshold, window=window), SentenceExit(threshold)):
        together = run(enc, policy, batch)
        for i in range(b):
            t, w = int(batch["attention_mask"][i].sum()), int((batch["word_positions"][i] >= 0).sum())
            alone = run(enc, policy, {k: v[i : i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()})
            assert torch.equal(alone.predictions[0], together.predictions[i, :w])
            assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
            assert torch.allclose(alone.flops[0], together.flops[i])


def test_high_threshold_exits_everything_after_the_first_layer():
    enc, batch = encoder(), random_batch(4, 8, seed=1)
    out = run(enc, TokenWindowExit(1.01, window=5), batch)
    words = batch["word_positions"] >= 0
    assert (out.exit_layers[words] == 1).all() and len(out.token_active) == 1
    static = run(enc, StaticExit(2), batch)
    assert (static.exit_layers[words] == 2).all() and len(static.token_active) == 2


def test_window_max_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(5, 11, generator=g)
    words = torch.arange(11)[None] < torch.tensor([11, 1, 4, 7, 0])[:, None]
    for window in (1, 2, 3, 5, 15):
        got = window_max(u, words, window)
        for b in range(5):
            n = int(words[b].sum())
            for j in range(n):
                lo, hi = max(0, j - window // 2), min(n, j + window // 2 + 1)
                assert got[b, j] == u[b, lo:hi].max()


def test_token_window_rule_and_sentence_rule():
    u = torch.tensor([[0.01, 0.01, 0.5, 0.01, 0.01, 0.01, 0.01]])
    words = torch.ones_like(u, dtype=torch.bool)
    stop = TokenWindowExit(0.1, window=3).decide(0, 4, u, words, words)
    assert stop.tolist() == [[True, False, False, False, True, True, True]]
    assert not SentenceExit(0.1).decide(0, 4, u, words, words).any()
    assert SentenceExit(0.1, pool="mean").decide(0, 4, u, words, words).all()
    assert TokenWindowExit(0.1, thresholds=[0.0, 0.0, 1.0, 1.0]).decide(2, 4, u, words, words).all()
    upper = TokenWindowExit(0.3, window=1, upper_factor=2.0)
    assert upper.decide(1, 4, u, words, words).sum() == 6 and upper.decide(2, 4, u, words, words).all()


def test_specials_stay_active_while_their_sentence_has_active_words():
    batch = random_batch(2, 3, seed=4)
    active = torch.zeros_like(batch["word_positions"], dtype=torch.bool)
    active[0, 0] = True
    tokens = token_activity(active, batch["token_word"], batch["attention_mask"])
    n0 = int(batch["attention_mask"][0].sum())
    assert tokens[0, 0] and tokens[0, n0 - 1] and not tokens[1].any()


def test_flops_counter_matches_torch_flop_counter():
    enc = encoder()
    for t in (5, 17, 40):
        ids = torch.randint(5, 100, (1, t))
        mask = torch.ones_like(ids)
        positions = torch.arange(t)[None]
        # the math backend spells attention as matmuls, which the counter sees (fused kernels it may not)
        with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            enc(ids, mask, positions)
        ours = full_model_flops(torch.tensor([t]), torch.tensor([t]), 4, 32, 48, 5)
        assert int(ours) == counter.get_total_flops()
        batch = {"input_ids": ids, "attention_mask": mask, "word_positions": positions,
                 "token_word": torch.arange(t)[None]}
        last_head_only = full_model_flops(torch.tensor([t]), torch.tensor([t]), 4, 32, 48, 5, heads="last")
        assert int(run(enc, NoExit(), batch).flops[0]) == int(last_head_only)  # NoExit skips the inner heads
        assert int(ours - last_head_only) == 3 * 2 * t * 32 * 5
