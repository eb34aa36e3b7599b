"""The prescribed exit schedule: its share of stopped words, its layers, and independence from the batch."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoModel, BertConfig

from tokexit import CONFIG_DIR
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.exits.prescribed import PrescribedExit, prescribed_words

CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=48, max_position_embeddings=512)


def tiny_encoder() -> MultiExitEncoder:
    torch.manual_seed(0)
    return MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5).eval()


def batch_of(lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Sentences with the given numbers of words, each word 1-2 subwords, [CLS] ... [SEP], right padding."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        pieces = torch.randint(1, 3, (n,), generator=g).tolist()
        positions, token_word = [], [-1]
        for j, p in enumerate(pieces):
            positions.append(len(token_word))
            token_word += [j] * p
        rows.append((positions, token_word + [-1]))
    t, w = max(len(r[1]) for r in rows), max(lengths)
    batch = {"input_ids": torch.zeros(len(rows), t, dtype=torch.long),
             "attention_mask": torch.zeros(len(rows), t, dtype=torch.long),
             "word_positions": torch.full((len(rows), w), -1), "token_word": torch.full((len(rows), t), -1)}
    for i, (positions, token_word) in enumerate(rows):
        batch["input_ids"][i, : len(token_word)] = torch.randint(5, 100, (len(token_word),), generator=g)
        batch["attention_mask"][i, : len(token_word)] = 1
        batch["word_positions"][i, : len(positions)] = torch.tensor(positions)
        batch["token_word"][i, : len(token_word)] = torch.tensor(token_word)
    return batch


def run(enc, policy, batch):
    return early_exit_forward(enc, policy, batch["input_ids"], batch["attention_mask"], batch["word_positions"],
                              batch["token_word"])


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_fraction_of_words_exiting_at_the_layer(fraction):
    enc, batch = tiny_encoder(), batch_of([200])
    out = run(enc, PrescribedExit(fraction, layer=2), batch)
    layers = out.exit_layers[0]
    assert abs(float((layers == 2).double().mean()) - fraction) < 0.02
    assert set(layers.unique().tolist()) == {2, 4}  # only at the prescribed layer or the last one
    assert (layers == 2).tolist() == prescribed_words(200, fraction).tolist()


def test_pattern_is_scattered_and_covers_the_extremes():
    stops = prescribed_words(64, 0.5)
    assert not stops[:16].all() and stops[:16].any()  # not a contiguous block
    assert not prescribed_words(64, 0.0).any() and prescribed_words(64, 1.0).all()


def test_same_exits_alone_and_in_a_batch():
    enc, lengths = tiny_encoder(), [7, 30, 1, 18]
    batch = batch_of(lengths, seed=3)
    policy = PrescribedExit(0.75, layer=2)
    together = run(enc, policy, batch)
    for i, w in enumerate(lengths):
        t = int(batch["attention_mask"][i].sum())
        alone = run(enc, policy, {k: v[i : i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()})
        assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
        assert torch.equal(alone.predictions[0], together.predictions[i, :w])
        assert torch.allclose(alone.flops[0], together.flops[i])


def test_config_builds_the_policy():
    policy = instantiate(OmegaConf.load(CONFIG_DIR / "exit" / "prescribed.yaml"))
    assert isinstance(policy, PrescribedExit)
    assert policy.describe() == {"policy": "prescribed", "uncertainty": "entropy", "fraction": 0.5, "layer": 2}
    with pytest.raises(ValueError):
        PrescribedExit(1.5, layer=2)
