"""int8 and bf16 (``tokexit.engine.quantize``) stacked with early exit: every word of a quantized tagger is tagged
under every fate and exit, predictions mostly agree with fp32, threshold-0 exit equals the quantized full model, a
sentence's result never depends on its batch neighbours (int8: per-token activation scales), quantized models refuse
to be saved, and bad schemes are errors naming the accepted ones. bf16's own mechanics: tests/test_bf16.py."""

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
from test_reduce import tagger
from torch import nn

from tokexit.engine import early_exit_forward
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.engine.quantize import Int8Linear, quantize_model
from tokexit.engine.subnetwork import SubNetwork
from tokexit.exits import NoExit, SentenceExit, TokenWindowExit
from tokexit.fates import Drop, HaltAndCopy, TokenReduction

SCHEMES = ["int8", "bf16"]
STATE_TOLERANCE = {"int8": 1e-5, "bf16": 2e-2}  # final states alone vs in a batch (bf16: rounding of other shapes)
LOGIT_TOLERANCE = {"int8": 1e-5, "bf16": 1e-2}
AGREEMENT = {"int8": 0.8, "bf16": 0.9}  # share of words tagged as the fp32 model tags them, at least


@functools.cache
def quantized(kind: str = "plain", seed: int = 0, scheme: str = "int8"):
    """A quantized copy of a tiny model: ``plain`` tagger, ``selector`` tagger (for reduce), ``classifier``."""
    build = {"plain": lambda: encoder(seed), "selector": lambda: tagger(seed), "classifier": lambda: classifier()}
    model = build[kind]()
    return quantize_model(copy.deepcopy(model), scheme)


def run(enc, policy, batch, fate=None):
    return early_exit_forward(enc, policy, batch["input_ids"], batch["attention_mask"], batch["word_positions"],
                              batch["token_word"], fate=fate)


def exits() -> list:
    return [TokenWindowExit(0.3, window=3), SentenceExit(0.4), NoExit()]


def test_every_backbone_linear_is_int8_and_the_heads_stay_fp32():
    model = quantized()
    layers = model.backbone.encoder
    assert not any(type(m) is nn.Linear for m in layers.modules())
    assert sum(isinstance(m, Int8Linear) for m in layers.modules()) == 6 * len(layers.layer)
    assert all(type(head.classifier) is nn.Linear for head in model.exits)
    assert not model.training


def test_none_is_a_no_op_and_unknown_schemes_name_the_accepted_ones():
    model = copy.deepcopy(encoder())
    assert quantize_model(model, None) is model
    assert all(type(m) is not Int8Linear for m in model.modules())
    with pytest.raises(ValueError, match="accepted: int8"):
        quantize_model(model, "int4")


def test_int8_linear_is_close_to_fp32_and_row_independent():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = Int8Linear(linear)
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        y, ref = q(x), linear(x)
        assert y.shape == ref.shape
        assert (y - ref).norm() / ref.norm() < 0.02
        # one huge neighbour row would change a per-tensor activation scale; per-token scales do not care
        crowded = q(torch.cat([x.reshape(-1, 64), 1000 * torch.randn(3, 64)]))[:14]
        assert torch.equal(crowded, y.reshape(-1, 48))
        assert torch.equal(q(torch.zeros(1, 64)), linear.bias[None].detach())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("fate", ["copy", "drop", "reduce"])
def test_every_word_is_tagged_with_every_fate_and_exit(fate, scheme):
    kind = "selector" if fate == "reduce" else "plain"
    enc, ref = quantized(kind, scheme=scheme), tagger() if kind == "selector" else encoder()
    make = {"copy": HaltAndCopy, "drop": Drop, "reduce": lambda: TokenReduction(keep_ratio=0.5)}[fate]
    for seed in range(3):
        batch = random_batch(6, 10, seed)
        words = batch["word_positions"] >= 0
        for policy in exits():
            out = run(enc, policy, batch, make())
            assert (out.exit_layers[words] >= 1).all() and (out.exit_layers[~words] == 0).all()
            fp32 = run(ref, policy, batch, make())
            agree = (out.predictions[words] == fp32.predictions[words]).float().mean()
            assert agree >= AGREEMENT[scheme], f"{fate} {policy}: {scheme} agrees with fp32 on {agree:.0%} of words"


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000), st.sampled_from(SCHEMES))
def test_threshold_zero_equals_the_quantized_full_model(b, max_words, seed, scheme):
    enc, batch = quantized(scheme=scheme), random_batch(b, max_words, seed)
    with torch.no_grad():
        full = enc(batch["input_ids"], batch["attention_mask"], batch["word_positions"])[-1]  # (N, C) dense path
    words = batch["word_positions"] >= 0
    for policy, fate in ((TokenWindowExit(0.0, window=3), HaltAndCopy()), (TokenWindowExit(0.0, window=3), Drop()),
                         (SentenceExit(0.0), HaltAndCopy()), (NoExit(), HaltAndCopy())):
        out = run(enc, policy, batch, fate)
        assert torch.equal(out.predictions[words], full.argmax(-1))
        assert (out.exit_layers[words] == 4).all()


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.floats(0.05, 0.6), st.integers(0, 10_000),
       st.sampled_from(["copy", "drop", "reduce"]), st.sampled_from(SCHEMES))
def test_quantized_model_does_not_depend_on_batch_neighbours(b, max_words, threshold, seed, fate, scheme):
    """Packed rows of all sentences share each GEMM: an int8 per-tensor activation scale would leak across them,
    bf16 rows are padded to buckets (never mixed)."""
    enc = quantized("selector" if fate == "reduce" else "plain", scheme=scheme)
    batch = random_batch(b, max_words, seed)
    batch["input_ids"][0, 1:] = 99  # a neighbour unlike the others
    make = {"copy": HaltAndCopy, "drop": Drop, "reduce": lambda: TokenReduction(keep_ratio=0.5)}[fate]
    for policy in (TokenWindowExit(threshold, window=3), SentenceExit(threshold), NoExit()):
        together = run(enc, policy, batch, make())
        for i in range(b):
            t, w = int(batch["attention_mask"][i].sum()), int((batch["word_positions"][i] >= 0).sum())
            alone = run(enc, policy, {k: v[i: i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()},
                        make())
            assert torch.equal(alone.predictions[0], together.predictions[i, :w])
            assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
            assert torch.allclose(alone.hidden[0].float(), together.hidden[i, :t].float(),
                                  atol=STATE_TOLERANCE[scheme])


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(sorted(CLASSIFY_POLICIES)), st.integers(2, 8), st.integers(0, 10_000), st.sampled_from(SCHEMES))
def test_quantized_classifier_equals_batch_size_one(name, b, seed, scheme):
    model, batch = quantized("classifier", scheme=scheme), classify_batch(b, seed)
    out = classify_early_exit(model, CLASSIFY_POLICIES[name], batch["input_ids"], batch["attention_mask"],
                              batch["token_type_ids"])
    for i in range(b):
        n = int(batch["attention_mask"][i].sum())
        alone = classify_early_exit(model, CLASSIFY_POLICIES[name], *(batch[k][i: i + 1, :n] for k in
                                    ("input_ids", "attention_mask", "token_type_ids")))
        assert torch.equal(alone.exit_layers[0], out.exit_layers[i])
        assert torch.allclose(alone.logits[0], out.logits[i], atol=LOGIT_TOLERANCE[scheme])


def test_a_quantized_model_cannot_be_saved_or_sliced(tmp_path):
    model = quantized()
    with pytest.raises(RuntimeError, match="cannot be saved"):
        model.state_dict()
    with pytest.raises(RuntimeError, match="cannot be saved"):  # what tokexit.model_io.save_model calls first
        model.backbone.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    with pytest.raises(AttributeError, match="no float weight"):
        model.backbone.encoder.layer[0].attention.self.query.weight  # noqa: B018
    sliced = copy.deepcopy(encoder()).use_subnetwork(SubNetwork(width=0.5))
    with pytest.raises(ValueError, match="sub-network"):
        quantize_model(sliced, "int8")
