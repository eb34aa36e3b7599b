"""The engine runs the backbone's own weights layer by layer and must reproduce Hugging Face exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AlbertConfig, AutoModel, BertConfig, ElectraConfig, RobertaConfig

from tokexit.backbones import adapter_for, load_backbone
from tokexit.engine import MultiExitEncoder

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
             max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
CONFIGS = {
    "bert": BertConfig(**SMALL),
    "roberta": RobertaConfig(**SMALL, pad_token_id=1),
    "electra": ElectraConfig(**SMALL, embedding_size=16),
    "albert": AlbertConfig(**SMALL, embedding_size=16, num_hidden_groups=1),
}


def random_batch(b: int, t: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    return ids * mask + 1 * (1 - mask), mask


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_layer_loop_equals_huggingface(arch):
    torch.manual_seed(0)
    model = AutoModel.from_config(CONFIGS[arch]).eval()
    encoder = MultiExitEncoder(model, num_labels=5).eval()
    ids, mask = random_batch(4, 20, 100, seed=1)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
        ours = encoder.hidden_states(ids, mask)
    valid = mask.bool()
    for r, o in zip(ref, ours, strict=True):
        assert (r - o)[valid].abs().max() <= 1e-5


def test_real_minilm_equals_huggingface():
    model = load_backbone("minilm-l6").eval()
    encoder = MultiExitEncoder(model, num_labels=3).eval()
    ids, mask = random_batch(3, 40, model.config.vocab_size, seed=2)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = encoder.hidden_states(ids, mask)[-1]
    assert (ref - ours)[mask.bool()].abs().max() <= 1e-5


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 24), st.integers(0, 10_000))
def test_sentence_output_does_not_depend_on_batch_neighbours(batch, length, seed):
    torch.manual_seed(0)
    encoder = MultiExitEncoder(AutoModel.from_config(CONFIGS["bert"]), num_labels=4).eval()
    ids, mask = random_batch(batch, length, 100, seed)
    positions = torch.where(mask.bool(), torch.arange(length), torch.tensor(-1))
    with torch.no_grad():
        together = encoder(ids, mask, positions)  # (L, N, C)
        alone = torch.cat(
            [encoder(ids[i : i + 1, : mask[i].sum()], mask[i : i + 1, : mask[i].sum()],
                     positions[i : i + 1, : mask[i].sum()]) for i in range(batch)], dim=1)
    assert together.shape == alone.shape == (3, int(mask.sum()), 4)
    assert (together - alone).abs().max() <= 1e-5


def test_forward_selects_word_positions_in_row_major_order():
    torch.manual_seed(0)
    encoder = MultiExitEncoder(AutoModel.from_config(CONFIGS["bert"]), num_labels=4).eval()
    ids, mask = random_batch(2, 10, 100, seed=3)
    mask[:] = 1
    positions = torch.tensor([[1, 4, -1], [2, 3, 7]])
    with torch.no_grad():
        logits = encoder(ids, mask, positions)
        states = encoder.hidden_states(ids, mask)
    expected = encoder.exits[1](states[1][[0, 0, 1, 1, 1], [1, 4, 2, 3, 7]])
    assert torch.allclose(logits[1], expected, atol=1e-6)


def test_training_mode_uses_dropout_everywhere():
    encoder = MultiExitEncoder(load_backbone("minilm-l6"), num_labels=3)
    assert all(m.training for m in encoder.modules())


def test_unknown_architecture_is_a_clear_error():
    model = AutoModel.from_config(CONFIGS["bert"])
    model.config.model_type = "gpt2"
    with pytest.raises(ValueError, match="no tokexit backbone adapter for model_type 'gpt2'"):
        adapter_for(model)


def test_hub_ids_are_not_downloaded():
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_backbone("bert-base-uncased")
