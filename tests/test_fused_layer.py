"""The fused query/key/value GEMM of ``tokexit.engine.layer``: equal to the three modules at inference, rebuilt
when a weight changes in place, never used where gradients are wanted."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_early_exit import CONFIG
from transformers import AutoModel

from tokexit.engine import MultiExitEncoder
from tokexit.engine import layer as layer_module
from tokexit.engine.layer import fused_qkv, project_qkv


def model(seed: int = 0) -> MultiExitEncoder:
    torch.manual_seed(seed)
    return MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5).eval()


def test_fused_projection_equals_the_three_modules():
    parts = model().layer_parts(1)
    x = torch.randn(3, 7, CONFIG.hidden_size)
    with torch.no_grad():
        assert fused_qkv(parts) is not None
        fused = project_qkv(parts, x)
        for got, module in zip(fused, (parts.query, parts.key, parts.value), strict=True):
            assert (got - module(x)).abs().max() <= 1e-6


def test_fused_weights_follow_in_place_updates():
    """Rewiring and load_state_dict change weights in place under no_grad: the cached stack must follow."""
    enc = model()
    parts = enc.layer_parts(0)
    x = torch.randn(5, CONFIG.hidden_size)
    with torch.no_grad():
        project_qkv(parts, x)  # builds the cache
        parts.key.weight.mul_(-2.0)
        parts.value.bias.add_(1.0)
        enc.load_state_dict({k: v.clone() + 0.5 if "query" in k else v for k, v in enc.state_dict().items()})
        q, k, v = project_qkv(parts, x)
        assert (q - parts.query(x)).abs().max() <= 1e-6
        assert (k - parts.key(x)).abs().max() <= 1e-6
        assert (v - parts.value(x)).abs().max() <= 1e-6


def test_training_keeps_the_three_modules_and_their_gradients():
    enc = model().train()
    ids = torch.randint(5, 100, (2, 9))
    states = enc.hidden_states(ids, torch.ones_like(ids))
    assert fused_qkv(enc.layer_parts(0)) is None  # gradients wanted: no fused copy
    states[-1].sum().backward()
    for layer in range(CONFIG.num_hidden_layers):
        parts = enc.layer_parts(layer)
        assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0
                   for m in (parts.query, parts.key, parts.value))


def test_fused_weights_follow_a_fused_optimizer_step():
    """``AdamW(fused=True)`` updates weights without bumping their version counter: after a training step, the
    evaluation (as Lightning's validation runs it: ``model.eval()`` then no_grad) must see the new weights."""
    enc = model()
    parts = enc.layer_parts(0)
    x = torch.randn(5, CONFIG.hidden_size)
    with torch.no_grad():
        project_qkv(parts, x)  # builds the cache in eval mode
    optimizer = torch.optim.AdamW(enc.parameters(), lr=0.5, fused=True)
    enc.train()
    ids = torch.randint(5, 100, (2, 9))
    enc.hidden_states(ids, torch.ones_like(ids))[-1].pow(2).sum().backward()
    optimizer.step()
    enc.eval()
    with torch.no_grad():
        q, k, v = project_qkv(parts, x)
        assert (q - parts.query(x)).abs().max() <= 1e-6
        assert (k - parts.key(x)).abs().max() <= 1e-6


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 10_000),
       st.sampled_from([torch.float32, torch.bfloat16]), st.booleans(), st.booleans())
def test_attention_as_batched_gemms_equals_sdpa(b, n, q_len, k_len, seed, dtype, materialise, masked):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, n, length, 8, generator=g).to(dtype) for length in (q_len, k_len, k_len))
    mask = torch.rand(b, 1, 1, k_len, generator=g) < 0.7
    mask[..., 0] = True  # every query sees a key
    if not masked:
        mask = None  # every key visible
    limit = layer_module.SCORES_LIMIT
    try:
        layer_module.SCORES_LIMIT = limit if materialise else 0  # 0: always scaled_dot_product_attention
        out = layer_module.attend(q, k, v, mask)
    finally:
        layer_module.SCORES_LIMIT = limit
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert out.dtype == dtype and out.shape == (b, n, q_len, 8)
    assert torch.allclose(out.float(), ref, atol=1e-5 if dtype == torch.float32 else 3e-2)


def test_layer_parts_follow_a_module_swapped_in():
    """The layer loop's cached LayerParts are rebuilt once any module is registered: a module swapped in after a
    run (a user's edit, quantisation) is the one the next run uses."""
    encoder = model()
    parts = encoder.layer_parts(1)
    assert encoder.layer_parts(1) is parts  # cached between steps
    swapped = torch.nn.Linear(CONFIG.hidden_size, CONFIG.intermediate_size)
    encoder.backbone.encoder.layer[1].intermediate.dense = swapped
    assert encoder.layer_parts(1).ffn_in is swapped
    x, mask = torch.randn(2, 5, CONFIG.hidden_size), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        out = encoder.layer(1, x, layer_module.key_mask(mask))
        swapped.bias.add_(1.0)  # in place: no new module, the same one runs
        assert not torch.equal(encoder.layer(1, x, layer_module.key_mask(mask)), out)


def test_key_mask_is_none_without_padding():
    assert layer_module.key_mask(torch.ones(2, 4, dtype=torch.long)) is None
    mask = layer_module.key_mask(torch.tensor([[1, 1, 0]]))
    assert mask.shape == (1, 1, 1, 3) and mask.tolist() == [[[[True, True, False]]]]
