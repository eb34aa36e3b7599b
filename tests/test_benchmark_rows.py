"""The benchmark's GEMM ceiling replays a run's row counts: they must be the rows the engine really hands to
each linear layer (recorded with forward hooks), for dense and halted layers, with padding and finished sentences."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_early_exit import encoder, random_batch, run

from tokexit.exits import NoExit, TokenWindowExit
from tokexit.exits.prescribed import PrescribedExit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from benchmark_exit import gemm_rows  # noqa: E402


@pytest.mark.parametrize("policy", [NoExit(), PrescribedExit(0.75, layer=1), PrescribedExit(1.0, layer=2),
                                    TokenWindowExit(0.8, window=3)], ids=lambda p: p.describe()["policy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gemm_rows_match_the_engine(policy, seed):
    enc = encoder(seed=1, labels=5)
    batch = random_batch(6, 9, seed)
    seen: dict[tuple[int, str], list[int]] = {}
    hooks = []
    for layer in range(enc.num_layers):
        parts = enc.layer_parts(layer)
        for name in ("query", "key", "ffn_out"):
            def record(module, args, output, key=(layer, name)):
                seen.setdefault(key, []).append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
            hooks.append(getattr(parts, name).register_forward_hook(record))
    try:
        out = run(enc, policy, batch)
    finally:
        for h in hooks:
            h.remove()
    assert len(out.token_active) >= 1
    for step, ((layer, _), active) in enumerate(zip(enc.plan, out.token_active, strict=False)):
        q_rows, kv_rows = gemm_rows(active, batch["attention_mask"])
        assert seen.get((layer, "query"), [0]) == [q_rows], (step, layer)
        assert seen.get((layer, "ffn_out"), [0]) == [q_rows], (step, layer)
        assert seen.get((layer, "key"), [0]) == [kv_rows], (step, layer)
    for layer in range(len(out.token_active), enc.num_layers):  # layers after the run ended compute nothing
        assert (layer, "query") not in seen
