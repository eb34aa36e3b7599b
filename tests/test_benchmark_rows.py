"""The benchmark's GEMM ceiling replays a run's row counts: they must be the rows the engine really hands to
each linear layer (recorded with forward hooks), for dense and halted layers, with padding and finished sentences."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_early_exit import encoder, random_batch, run

from tokexit.exits import NoExit, TokenWindowExit
from tokexit.exits.prescribed import PrescribedExit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from benchmark_exit import gemm_rows  # noqa: E402

LAYERS = 4  # test_early_exit.CONFIG


def test_gemm_rows_by_hand():
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])  # lengths 5, 3, 4
    real = mask.bool()  # halt-and-copy: every real token is a key
    assert gemm_rows(real, real, mask) == (18, 18)  # dense: the whole padded (B, T) block
    some = torch.tensor([[1, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]]).bool()
    assert gemm_rows(some, real, mask) == (5, 2 * 5)  # 5 active tokens; keys of the 2 busy sentences, length 5
    longest_done = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0]]).bool()
    assert gemm_rows(longest_done, real, mask) == (4, 2 * 4)  # the finished longest sentence no longer sets it
    # finished sentences leave the batch; if the rest compute every real token, the layer is dense on what is left
    rest_whole = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]).bool()
    assert gemm_rows(rest_whole, real, mask) == (2 * 4, 2 * 4)  # 2 sentences x length 4, padding included
    assert gemm_rows(torch.zeros_like(some), real, mask) == (0, 0)


def expected_exit_layers(policy, batch) -> torch.Tensor | None:
    """(B, W) 1-based exit layer of every word (0 for padding) by the policy's own rule; None if data-dependent."""
    words = batch["word_positions"] >= 0
    if isinstance(policy, NoExit):
        return torch.where(words, LAYERS, 0)
    if isinstance(policy, PrescribedExit):  # word j stops at policy.layer when frac(j * 2654435761 / 2**32) < f
        j = torch.arange(words.shape[1], dtype=torch.float64)
        stops = (j * 2654435761) % 2**32 / 2**32 < policy.fraction
        return torch.where(words, torch.where(stops, policy.layer, LAYERS), 0)
    return None


def expected_rows(exit_layers: torch.Tensor, batch, step: int) -> tuple[int, int]:
    """(query/output/feed-forward rows, key/value rows) of 0-based ``step``, from the words' exit layers alone.

    The engine's rule (engine/loop.py, halting.sparse_layer): finished sentences leave the batch (and the padding
    only they needed goes with them); if every sentence left computes all its real tokens the layer is dense on
    that (B', T') block; otherwise the active tokens are packed, and keys are every real token of the B' sentences
    up to the longest one."""
    mask, token_word = batch["attention_mask"].bool(), batch["token_word"]
    words = batch["word_positions"] >= 0
    q_rows, busy_lengths, whole = 0, [], True
    for i in range(len(mask)):
        active = {j for j in range(words.shape[1]) if words[i, j] and exit_layers[i, j] > step}
        if not active:
            continue  # a finished sentence costs nothing
        subwords = sum(int(token_word[i, t]) in active for t in range(mask.shape[1]))
        specials = int((mask[i] & (token_word[i] < 0)).sum())  # [CLS], [SEP] of a sentence still running
        q_rows += subwords + specials
        busy_lengths.append(int(mask[i].sum()))
        whole = whole and subwords + specials == busy_lengths[-1]
    busy, longest = len(busy_lengths), max(busy_lengths)
    if whole:  # dense: the whole padded batch while no sentence has left, else the rows left, trimmed
        rows = mask.numel() if busy == len(mask) else busy * longest
        return rows, rows
    return q_rows, busy * longest


POLICIES = [NoExit(), PrescribedExit(0.75, layer=1), PrescribedExit(1.0, layer=2),
            TokenWindowExit(0.9, window=3), TokenWindowExit(0.97, window=3)]
STEPS = {"none": 4, "prescribed-0.75": 4, "prescribed-1.0": 2}  # layers run, where the policy alone decides


def record_rows(enc, names: tuple[str, ...], monkeypatch) -> tuple[dict[tuple[int, str], list[int]], list]:
    """Rows each linear layer ``names`` of every layer is called with, as (layer, name) -> [rows per call]; the fused
    query/key/value GEMM (:func:`tokexit.engine.layer.project_qkv`, where the three get the same rows) counts as one
    call of each. Returns the record and the hooks to remove."""
    import tokexit.engine.halting as halting
    import tokexit.engine.layer as layer_module

    seen: dict[tuple[int, str], list[int]] = {}
    layer_of = {id(enc.layer_parts(layer).query): layer for layer in range(enc.num_layers)}
    fused = layer_module.project_qkv

    def project(parts, hidden):
        if layer_module.fused_qkv(parts) is not None:  # one GEMM: record it for query and key, skip their hooks
            for name in set(names) & {"query", "key"}:
                rows = hidden.reshape(-1, hidden.shape[-1]).shape[0]
                seen.setdefault((layer_of[id(parts.query)], name), []).append(rows)
        return fused(parts, hidden)

    monkeypatch.setattr(layer_module, "project_qkv", project)
    monkeypatch.setattr(halting, "project_qkv", project)
    hooks = []
    for layer in range(enc.num_layers):
        parts = enc.layer_parts(layer)
        for name in names:
            def hook(module, args, output, key=(layer, name)):
                seen.setdefault(key, []).append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
            hooks.append(getattr(parts, name).register_forward_hook(hook))
    return seen, hooks


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "-".join(str(v) for v in list(p.describe().values())[:3]))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gemm_rows_match_the_engine(policy, seed, monkeypatch):
    enc = encoder(seed=1, labels=5)
    batch = random_batch(6, 9, seed)
    seen, hooks = record_rows(enc, ("query", "key", "ffn_out"), monkeypatch)
    try:
        out = run(enc, policy, batch)
    finally:
        for h in hooks:
            h.remove()
    words = batch["word_positions"] >= 0
    exit_layers = expected_exit_layers(policy, batch)
    if exit_layers is None:  # uncertainty-driven: take the engine's exits, but they must halt something
        exit_layers = out.exit_layers
        assert bool(((exit_layers < exit_layers.max()) & words).any()), "the test should exercise halted layers"
    assert torch.equal(out.exit_layers, exit_layers)
    steps = int(exit_layers.max())  # the run ends when its last word stops
    if policy.name != "token_window":
        assert steps == STEPS[f"{policy.name}-{policy.fraction}" if policy.name == "prescribed" else policy.name]
    assert len(out.token_active) == steps
    assert [layer for layer, _ in enc.plan[:steps]] == list(range(steps))
    for step, (active, keys) in enumerate(zip(out.record.computed, out.record.keys, strict=True)):
        expected = expected_rows(exit_layers, batch, step)
        assert seen[(step, "query")] == [expected[0]], step  # the engine: each linear layer once, with these rows
        assert seen[(step, "ffn_out")] == [expected[0]], step
        assert seen[(step, "key")] == [expected[1]], step
        assert gemm_rows(active, keys, batch["attention_mask"]) == expected, step  # the benchmark replays exactly them
    assert {layer for layer, _ in seen} == set(range(steps))  # layers after the run ended compute nothing


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gemm_rows_match_the_engine_when_stopped_tokens_leave(seed, monkeypatch):
    """The drop fate packs keys and values too: the replayed rows are still the rows the engine computes."""
    from tokexit.engine import early_exit_forward
    from tokexit.fates import Drop

    enc, batch = encoder(seed=1, labels=5), random_batch(6, 9, seed)
    seen, hooks = record_rows(enc, ("query", "key"), monkeypatch)
    try:
        out = early_exit_forward(enc, TokenWindowExit(0.9, window=1), batch["input_ids"], batch["attention_mask"],
                                 batch["word_positions"], batch["token_word"], fate=Drop())
    finally:
        for h in hooks:
            h.remove()
    packed_keys = 0
    for step, (computed, keys) in enumerate(zip(out.record.computed, out.record.keys, strict=True)):
        q, kv = gemm_rows(computed, keys, batch["attention_mask"])
        assert seen[(step, "query")] == [q] and seen[(step, "key")] == [kv], step
        packed_keys += int(kv == int(keys.sum()) < int(batch["attention_mask"].sum()))  # keys: the tokens left
    assert packed_keys >= 1  # some layer really ran with packed keys
