"""bf16 inference (``quantize_model(model, "bf16")``, ``tokexit.engine.bf16``) stacked with early exit: the backbone
runs in bfloat16 and the heads in fp32, every word is tagged under every fate and exit, predictions agree with
fp32, threshold-0 exit equals the bf16 full model, a sentence's result does not depend on its batch neighbours
(rows are padded to buckets, never mixed), and a converted model refuses to be saved."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_classification_engine import POLICIES as CLASSIFY_POLICIES
from test_classification_engine import classifier
from test_classification_engine import random_batch as classify_batch
from test_early_exit import encoder, random_batch
from test_quantize import exits, run
from test_reduce import tagger
from torch import nn

from tokexit.engine import bf16 as bf16_module
from tokexit.engine.bf16 import EXACT_ROWS, Bf16Linear, row_bucket
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.engine.quantize import quantize_model
from tokexit.exits import NoExit, SentenceExit, TokenWindowExit
from tokexit.fates import Drop, HaltAndCopy, TokenReduction


@functools.cache
def converted(kind: str = "plain"):
    """A bf16 copy of a tiny model: ``plain`` tagger, ``selector`` tagger (for reduce), ``classifier``."""
    build = {"plain": encoder, "selector": tagger, "classifier": classifier}
    return quantize_model(copy.deepcopy(build[kind]()), "bf16")


def fate(name: str):
    return {"copy": HaltAndCopy, "drop": Drop, "reduce": lambda: TokenReduction(keep_ratio=0.5)}[name]()


@given(st.integers(1, 1 << 16))
def test_row_buckets_cover_the_rows_with_little_padding(rows):
    b = row_bucket(rows)
    assert b >= rows and row_bucket(b) == b
    assert b == rows if rows <= EXACT_ROWS else b <= rows * 9 / 8
    assert row_bucket(rows + 1) >= b  # monotone


def test_a_whole_corpus_needs_few_shapes():
    assert len({row_bucket(m) for m in range(1, 16385)}) < 200


def test_bf16_linear_pads_rows_without_mixing_them():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = Bf16Linear(linear)
    x = torch.randn(2, 50, 64)  # 100 rows: padded to a bucket of 104
    with torch.no_grad():
        y, ref = q(x), linear(x)
        assert y.shape == ref.shape and y.dtype == torch.bfloat16
        assert (y.float() - ref).norm() / ref.norm() < 0.02
        crowded = q(torch.cat([x.reshape(-1, 64), 1000 * torch.randn(7, 64)]))[:100]  # other rows, other bucket
        assert torch.allclose(crowded.float(), y.reshape(-1, 48).float(), atol=0.05, rtol=0.02)
        assert torch.equal(q(torch.zeros(1, 64)).float(), linear.bias[None].detach().bfloat16().float())


def test_the_backbone_is_bf16_and_the_heads_stay_fp32():
    model = converted()
    layers = model.backbone.encoder
    assert not any(type(m) is nn.Linear for m in layers.modules())
    assert sum(isinstance(m, Bf16Linear) for m in layers.modules()) == 6 * len(layers.layer)
    assert all(p.dtype == torch.bfloat16 for p in model.backbone.parameters())
    assert all(p.dtype == torch.float32 for p in model.exits.parameters())
    batch = random_batch(3, 8, 0)
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["word_positions"])
    assert all(x.dtype == torch.float32 for x in logits)  # exit decisions are taken in fp32
    assert not model.training


@pytest.mark.parametrize("name", ["copy", "drop", "reduce"])
def test_every_word_is_tagged_with_every_fate_and_exit(name):
    kind = "selector" if name == "reduce" else "plain"
    enc, ref = converted(kind), tagger() if kind == "selector" else encoder()
    for seed in range(3):
        batch = random_batch(6, 10, seed)
        words = batch["word_positions"] >= 0
        for policy in exits():
            out = run(enc, policy, batch, fate(name))
            assert (out.exit_layers[words] >= 1).all() and (out.exit_layers[~words] == 0).all()
            fp32 = run(ref, policy, batch, fate(name))
            agree = (out.predictions[words] == fp32.predictions[words]).float().mean()
            assert agree >= 0.9, f"{name} {policy}: bf16 agrees with fp32 on {agree:.0%} of the words"


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000))
def test_threshold_zero_equals_the_bf16_full_model(b, max_words, seed):
    enc, batch = converted(), random_batch(b, max_words, seed)
    with torch.no_grad():
        full = enc(batch["input_ids"], batch["attention_mask"], batch["word_positions"])[-1]  # (N, C) dense path
    words = batch["word_positions"] >= 0
    for policy, fate_ in ((TokenWindowExit(0.0, window=3), HaltAndCopy()), (TokenWindowExit(0.0, window=3), Drop()),
                          (SentenceExit(0.0), HaltAndCopy()), (NoExit(), HaltAndCopy())):
        out = run(enc, policy, batch, fate_)
        assert torch.equal(out.predictions[words], full.argmax(-1))
        assert (out.exit_layers[words] == 4).all()


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.floats(0.05, 0.6), st.integers(0, 10_000),
       st.sampled_from(["copy", "drop", "reduce"]))
def test_bf16_does_not_depend_on_batch_neighbours(b, max_words, threshold, seed, name):
    enc = converted("selector" if name == "reduce" else "plain")
    batch = random_batch(b, max_words, seed)
    batch["input_ids"][0, 1:] = 99  # a neighbour unlike the others
    for policy in (TokenWindowExit(threshold, window=3), SentenceExit(threshold), NoExit()):
        together = run(enc, policy, batch, fate(name))
        for i in range(b):
            t, w = int(batch["attention_mask"][i].sum()), int((batch["word_positions"][i] >= 0).sum())
            alone = run(enc, policy, {k: v[i: i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()},
                        fate(name))
            assert torch.equal(alone.predictions[0], together.predictions[i, :w])
            assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
            assert torch.allclose(alone.hidden[0].float(), together.hidden[i, :t].float(), atol=2e-2)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(sorted(CLASSIFY_POLICIES)), st.integers(2, 8), st.integers(0, 10_000))
def test_bf16_classifier_equals_batch_size_one(name, b, seed):
    model, batch = converted("classifier"), classify_batch(b, seed)
    out = classify_early_exit(model, CLASSIFY_POLICIES[name], batch["input_ids"], batch["attention_mask"],
                              batch["token_type_ids"])
    for i in range(b):
        n = int(batch["attention_mask"][i].sum())
        alone = classify_early_exit(model, CLASSIFY_POLICIES[name], *(batch[k][i: i + 1, :n] for k in
                                    ("input_ids", "attention_mask", "token_type_ids")))
        assert torch.equal(alone.exit_layers[0], out.exit_layers[i])
        assert torch.allclose(alone.logits[0], out.logits[i], atol=1e-2)


def test_a_bf16_model_cannot_be_saved(tmp_path):
    model = converted()
    with pytest.raises(RuntimeError, match="cannot be saved"):
        model.state_dict()
    with pytest.raises(RuntimeError, match="cannot be saved"):
        model.backbone.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_a_cpu_without_bf16_units_gets_a_warning(monkeypatch):
    monkeypatch.setattr(bf16_module, "has_fast_bf16", lambda: False)
    monkeypatch.setattr("tokexit.engine.quantize.has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="slower than fp32"):
        quantize_model(copy.deepcopy(encoder()), "bf16")


def test_prepacked_weights_give_the_plain_product():
    torch.manual_seed(0)
    q = Bf16Linear(nn.Linear(64, 48))
    if q.packed is None:
        pytest.skip("this PyTorch build cannot prepack bf16 weights for oneDNN (Bf16Linear uses F.linear)")
    x = torch.randn(37, 64)
    with torch.no_grad():
        packed = q(x)
        q.packed = None  # the fallback path
        plain = q(x)
    assert torch.allclose(packed.float(), plain.float(), atol=1e-2, rtol=1e-2)
    assert torch.allclose(plain.float(), torch.nn.functional.linear(x.bfloat16(), q.weight, q.bias).float())


def test_the_feed_forward_gelu_runs_inside_its_matrix_product():
    model, reference = converted(), encoder()
    for index in range(model.adapter.num_layers):
        parts, ref = model.adapter.layer(index), reference.adapter.layer(index)
        assert parts.ffn_in.gelu and type(parts.act) is nn.Identity
        x = torch.randn(5, ref.ffn_in.in_features)
        with torch.no_grad():
            fused, expected = parts.ffn_in(x.bfloat16()).float(), torch.nn.functional.gelu(ref.ffn_in(x))
            parts.ffn_in.packed, unpacked = None, parts.ffn_in.packed  # the F.linear fallback applies it too
            fallback = parts.ffn_in(x.bfloat16()).float()
            parts.ffn_in.packed = unpacked
        assert torch.allclose(fused, expected, atol=0.05) and torch.allclose(fallback, expected, atol=0.05)
    tanh = nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="tanh"))
    assert not bf16_module.fuse_gelu(tanh, bf16_module.Bf16Linear(tanh[0]), tanh[1])  # only the exact GELU
