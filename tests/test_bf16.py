"""bf16 inference (``quantize_model(model, "bf16")``, ``tokexit.engine.bf16``): row buckets, rows never mixed, the
backbone in bfloat16 and the heads in fp32, prepacked weights and the fused GELU equal the plain product, a converted
model refuses to be saved, a CPU without bf16 units gets a warning. Stacked with every exit and fate (every word
tagged, threshold 0 = full model, batch-neighbour independence): tests/test_quantize.py, for int8 and bf16."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_early_exit import encoder, random_batch
from test_quantize import quantized
from torch import nn

from tokexit.engine import bf16 as bf16_module
from tokexit.engine.bf16 import EXACT_ROWS, Bf16Linear, row_bucket
from tokexit.engine.quantize import quantize_model


def converted(kind: str = "plain"):
    """A bf16 copy of a tiny model: ``plain`` tagger, ``selector`` tagger (for reduce), ``classifier``."""
    return quantized(kind, scheme="bf16")


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
