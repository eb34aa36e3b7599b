"""Exactness of the sequence-classification engine: batched early exit (PABEE, entropy, truncation) against the
full model and against batch size 1, FLOPs accounting, and DynaBERT width/depth slicing against masking."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, BertConfig

from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.engine.subnetwork import SubNetwork
from tokexit.exits import EntropyExit, NoExit, PatienceExit, StaticExit
from tokexit.exits.base import normalised_entropy

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=64)


@functools.cache
def classifier(labels: int = 3, seed: int = 0, pooling: str = "cls") -> MultiExitClassifier:
    torch.manual_seed(seed)
    model = MultiExitClassifier(AutoModel.from_config(CONFIG), num_labels=labels, pooling=pooling).eval()
    for head in model.exits:  # spread the logits so that exits disagree and entropies vary
        torch.nn.init.normal_(head.classifier.weight, std=1.0)
    return model


def random_batch(b: int, seed: int, max_len: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len + 1, (b,), generator=g)
    ids = torch.zeros(b, int(lengths.max()), dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for i, n in enumerate(lengths.tolist()):
        ids[i, :n] = torch.randint(5, 100, (n,), generator=g)
        mask[i, :n] = 1
        types[i, n // 2:n] = 1  # a sentence pair
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def run(model, policy, batch):
    return classify_early_exit(model, policy, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def test_patience_beyond_depth_equals_the_full_model():
    model, batch = classifier(), random_batch(9, seed=1)
    full = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[-1]  # (B, C)
    for policy in (PatienceExit(patience=CONFIG.num_hidden_layers), NoExit(), EntropyExit(threshold=0.0)):
        out = run(model, policy, batch)
        assert torch.equal(out.exit_layers, torch.full((9,), CONFIG.num_hidden_layers))
        assert torch.equal(out.logits.argmax(-1), full.argmax(-1))
        assert (out.logits - full).abs().max() <= 1e-5


POLICIES = {
    "patience1": PatienceExit(patience=1),
    "patience2": PatienceExit(patience=2),
    "entropy": EntropyExit(threshold=0.9),
    "raw_entropy": EntropyExit(threshold=0.95, normalised=False),
    "static2": StaticExit(2),
}


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(sorted(POLICIES)), st.integers(2, 10), st.integers(0, 10_000), st.sampled_from(["cls", "mean"]))
def test_batched_exit_equals_batch_size_one(name, b, seed, pooling):
    model, batch, policy = classifier(pooling=pooling), random_batch(b, seed), POLICIES[name]
    together = run(model, policy, batch)
    for i in range(b):
        n = int(batch["attention_mask"][i].sum())
        alone = run(model, policy, {k: v[i:i + 1, :n] for k, v in batch.items()})
        assert int(alone.exit_layers[0]) == int(together.exit_layers[i])
        assert int(alone.logits[0].argmax()) == int(together.logits[i].argmax())
        assert torch.allclose(alone.logits[0], together.logits[i], atol=1e-5)
        assert torch.allclose(alone.flops[0], together.flops[i])


def test_policies_exit_where_their_rule_says():
    model, batch = classifier(), random_batch(16, seed=3)
    every = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # (L, B, C)
    preds, n = every.argmax(-1), CONFIG.num_hidden_layers
    out = run(model, PatienceExit(patience=1), batch)
    for i in range(16):  # first layer whose argmax equals the previous one's, else the last layer
        expected = next((j + 1 for j in range(1, n) if preds[j, i] == preds[j - 1, i]), n)
        assert int(out.exit_layers[i]) == expected
    h = torch.stack([normalised_entropy(z) for z in every])  # (L, B)
    out = run(model, EntropyExit(threshold=0.9), batch)
    for i in range(16):
        expected = next((j + 1 for j in range(n - 1) if h[j, i] < 0.9), n)
        assert int(out.exit_layers[i]) == expected
    assert len(set(out.exit_layers.tolist())) > 1, "the test should exercise several exit layers"


def test_regression_patience_uses_the_change_of_the_value():
    model, batch = classifier(labels=1), random_batch(12, seed=4)
    with torch.no_grad():
        every = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[..., 0]  # (L, B)
    threshold = float((every[1:] - every[:-1]).abs().median())
    out = run(model, PatienceExit(patience=1, regression_threshold=threshold), batch)
    for i in range(12):
        expected = next((j + 1 for j in range(1, 4) if abs(every[j, i] - every[j - 1, i]) < threshold), 4)
        assert int(out.exit_layers[i]) == expected
        assert torch.allclose(out.logits[i, 0], every[expected - 1, i], atol=1e-5)
    with pytest.raises(ValueError, match="regression"):
        run(model, EntropyExit(threshold=0.5), batch)


def test_flops_of_the_full_run_match_torch_flop_counter():
    model, batch = classifier(), random_batch(1, seed=5)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = model.hidden_states(ids, mask)[-1]
        model.exits[-1](model.pooler(hidden, mask))
    assert int(run(model, NoExit(), batch).flops[0]) == counter.get_total_flops()


def test_subnetwork_layer_rule():
    assert SubNetwork(depth=0.5).layers(12) == [0, 2, 4, 6, 8, 10]
    assert SubNetwork(depth=0.75).layers(12) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert SubNetwork(depth=0.5).plan(6) == [(0, 1), (2, 3), (4, 5)]
    assert SubNetwork(depth=0.75).plan(6) == [(0, 0), (1, 1), (2, 3), (4, 4), (5, 5)]
    assert SubNetwork(width=0.25).heads(12) == 3 and SubNetwork(width=0.25).neurons(1536) == 384
    with pytest.raises(ValueError):
        SubNetwork(width=0.0)


@pytest.mark.parametrize("width,depth", [(0.5, 1.0), (0.25, 0.5), (0.75, 0.75)])
def test_width_slicing_equals_masking_the_dropped_heads_and_neurons(width, depth):
    model, batch = classifier(), random_batch(5, seed=6)
    sub = SubNetwork(width, depth)
    sliced = copy.deepcopy(model).use_subnetwork(sub)
    reference = copy.deepcopy(model)
    heads, neurons = sub.heads(CONFIG.num_attention_heads), sub.neurons(CONFIG.intermediate_size)
    d = CONFIG.hidden_size // CONFIG.num_attention_heads
    with torch.no_grad():
        for layer in reference.backbone.encoder.layer:  # zero what the sub-network drops
            layer.attention.output.dense.weight[:, heads * d:] = 0
            layer.output.dense.weight[:, neurons:] = 0
    reference.use_subnetwork(SubNetwork(1.0, depth))  # same layers, full width but masked
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(sliced(*args), reference(*args), atol=1e-5)
    out = run(sliced, NoExit(), batch)
    assert out.exit_layers.max() == len(sub.layers(4))
    # the analytic FLOPs are those of the narrower, shallower network that really ran, example by example ...
    last_exit = sliced.plan[-1][1]
    for i in range(len(out.flops)):
        n = int(batch["attention_mask"][i].sum())
        ids, mask = batch["input_ids"][i:i + 1, :n], batch["attention_mask"][i:i + 1, :n]
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            hidden = sliced.hidden_states(ids, mask, batch["token_type_ids"][i:i + 1, :n])[-1]
            sliced.exits[last_exit](sliced.pooler(hidden, mask))
        assert int(out.flops[i]) == counter.get_total_flops(), i
    # ... so every one of these proper sub-networks costs strictly less than the full model on every example
    assert not sub.is_full
    assert (out.flops < run(model, NoExit(), batch).flops).all()


def test_rewiring_keeps_the_full_model_and_puts_important_units_first():
    from tokexit.engine.rewiring import importance, rewire

    model = copy.deepcopy(classifier()).train(False)
    batches = [random_batch(6, seed=s) for s in (7, 8)]
    targets = torch.tensor([0, 1, 2, 0, 1, 2])

    def loss(batch):
        states = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        pooled = model.pooler(states[-1], batch["attention_mask"])
        return torch.nn.functional.cross_entropy(model.exits[-1](pooled), targets)

    args = (batches[0]["input_ids"], batches[0]["attention_mask"], batches[0]["token_type_ids"])
    with torch.no_grad():
        before = model(*args)
    heads, neurons = importance(model, batches, loss)
    rewire(model, heads, neurons)
    with torch.no_grad():
        assert torch.allclose(model(*args), before, atol=1e-5)  # a permutation changes nothing
    heads_after, neurons_after = importance(model, batches, loss)
    assert torch.allclose(heads_after, heads.sort(1, descending=True).values, rtol=1e-3, atol=1e-7)
    assert torch.allclose(neurons_after, neurons.sort(1, descending=True).values, rtol=1e-3, atol=1e-7)
