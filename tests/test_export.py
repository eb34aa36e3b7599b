"""Exporting DynaBERT sub-networks as smaller Hugging Face model directories (tokexit.export)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertModel,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
)

from tokexit.export import export_subnetwork, slice_bert
from tokexit.export.slim_bert import SlimBertModel

HIDDEN, HEADS, INTERMEDIATE, LAYERS, HEAD_SIZE = 64, 4, 128, 4, 16
CASES = [(4, 128, [0, 1, 2, 3]), (2, 64, [0, 2]), (1, 32, [0, 1, 3])]
# 3 heads: hidden_size 64 is no multiple of the head count (plain BertSelfAttention refuses it); layers reordered
EXTRA_CASES = [(3, 100, [3, 1])]


def tiny_bert(seed: int = 0, **overrides) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=HIDDEN,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        vocab_size=100,
        max_position_embeddings=32,
        **overrides,
    )
    model = BertModel(config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorms, so that a slicing mistake shows
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 100, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def reference(model: BertModel, heads: int, neurons: int, layers: list[int]) -> BertModel:
    """The sub-network inside a full-size copy: dropped heads and neurons get zero output columns, dropped layers
    are removed."""
    ref = copy.deepcopy(model)
    for layer in ref.encoder.layer:
        layer.attention.output.dense.weight[:, heads * HEAD_SIZE :] = 0
        layer.output.dense.weight[:, neurons:] = 0
    ref.encoder.layer = nn.ModuleList([ref.encoder.layer[i] for i in layers])
    ref.config.num_hidden_layers = len(layers)
    return ref.eval()


def outputs(model, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch(), **kwargs).last_hidden_state


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("heads", "neurons", "layers"), CASES + EXTRA_CASES)
def test_exported_model_matches_reference(tmp_path, heads, neurons, layers):
    model = tiny_bert()
    directory = export_subnetwork(model, heads, neurons, layers, tmp_path / "slim")
    loaded = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
    expected = outputs(reference(model, heads, neurons, layers))
    torch.testing.assert_close(outputs(loaded), expected, atol=1e-5, rtol=0)
    # the in-memory slice agrees too, and so does eager attention
    torch.testing.assert_close(outputs(slice_bert(model, heads, neurons, layers)), expected, atol=1e-5, rtol=0)
    eager = AutoModel.from_pretrained(directory, trust_remote_code=True, attn_implementation="eager").eval()
    torch.testing.assert_close(outputs(eager), expected, atol=1e-5, rtol=0)


def test_full_export_reproduces_original(tmp_path):
    model = tiny_bert()
    directory = export_subnetwork(model, HEADS, INTERMEDIATE, list(range(LAYERS)), tmp_path / "full")
    loaded = AutoModel.from_pretrained(directory, trust_remote_code=True).eval()
    torch.testing.assert_close(outputs(loaded), outputs(model), atol=1e-6, rtol=0)
    full, exported = model.state_dict(), loaded.state_dict()
    assert exported.keys() == full.keys()
    for key, value in full.items():
        torch.testing.assert_close(exported[key], value, atol=0, rtol=0)


def test_exported_directory_is_smaller_and_self_contained(tmp_path):
    model = tiny_bert()
    directory = export_subnetwork(model, 1, 32, [0, 1, 3], tmp_path / "slim")

    files = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_slim_bert.py", "modeling_slim_bert.py"} <= files
    for name in ("configuration_slim_bert.py", "modeling_slim_bert.py", "config.json"):
        assert "tokexit" not in (directory / name).read_text(encoding="utf-8")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "slim_bert"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_slim_bert.SlimBertConfig",
        "AutoModel": "modeling_slim_bert.SlimBertModel",
    }

    loaded, info = AutoModel.from_pretrained(
        directory, trust_remote_code=True, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # where tokexit is imported, its registered classes are used even with trust_remote_code=True; the shipped code
    # runs only without tokexit (test_loads_without_tokexit_offline_in_a_fresh_interpreter)
    assert type(loaded) is SlimBertModel
    assert isinstance(loaded, BertModel)
    assert (loaded.config.num_attention_heads, loaded.config.attention_head_size) == (1, HEAD_SIZE)
    assert (loaded.config.intermediate_size, loaded.config.num_hidden_layers) == (32, 3)
    assert loaded.config.hidden_size == HIDDEN
    assert len(loaded.encoder.layer) == 3
    layer = loaded.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (HEAD_SIZE, HIDDEN)
    assert layer.attention.output.dense.weight.shape == (HIDDEN, HEAD_SIZE)
    assert layer.intermediate.dense.weight.shape == (32, HIDDEN)
    assert layer.output.dense.weight.shape == (HIDDEN, 32)
    assert parameter_count(loaded) < parameter_count(model)
    expected = parameter_count(model.embeddings) + parameter_count(model.pooler)  # then three layers:
    expected += 3 * (3 * (HIDDEN * HEAD_SIZE + HEAD_SIZE) + HEAD_SIZE * HIDDEN + HIDDEN + 2 * HIDDEN)  # attention
    expected += 3 * (HIDDEN * 32 + 32 + 32 * HIDDEN + HIDDEN + 2 * HIDDEN)  # feed-forward
    assert parameter_count(loaded) == expected


def test_loads_without_tokexit_offline_in_a_fresh_interpreter(tmp_path):
    """A fresh interpreter where tokexit cannot be imported, offline, with its own remote-code module cache."""
    model = tiny_bert()
    heads, neurons, layers = CASES[1]
    directory = export_subnetwork(model, heads, neurons, layers, tmp_path / "slim")
    torch.save(batch(), tmp_path / "batch.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tokexit"] = None  # any import of tokexit fails
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(directory)!r}, trust_remote_code=True, local_files_only=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__  # the shipped code
        with torch.no_grad():
            out = model(**torch.load({str(tmp_path / "batch.pt")!r})).last_hidden_state
        torch.save(out, {str(tmp_path / "out.pt")!r})
        """
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "modules" / "transformers_modules").is_dir()
    expected = outputs(reference(model, heads, neurons, layers))
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, atol=1e-5, rtol=0)


def test_tokenizer_is_saved(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(words)})
    directory = export_subnetwork(tiny_bert(), 2, 64, [1], tmp_path / "slim", tokenizer=tokenizer)
    loaded = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    assert loaded("hello world")["input_ids"] == [2, 5, 6, 3]


def test_slice_bert_copies_and_keeps_bert_keys():
    model = tiny_bert()
    slim = slice_bert(model, 2, 64, [3, 1])
    assert isinstance(slim, SlimBertModel) and not slim.training
    state, full = slim.state_dict(), model.state_dict()
    assert set(state) <= set(full)
    width = 2 * HEAD_SIZE
    for new, old in enumerate([3, 1]):
        p, q = f"encoder.layer.{old}.", f"encoder.layer.{new}."
        assert torch.equal(state[q + "attention.self.key.weight"], full[p + "attention.self.key.weight"][:width])
        assert torch.equal(state[q + "attention.self.value.bias"], full[p + "attention.self.value.bias"][:width])
        dense = "attention.output.dense."
        assert torch.equal(state[q + dense + "weight"], full[p + dense + "weight"][:, :width])
        assert torch.equal(state[q + dense + "bias"], full[p + dense + "bias"])
        assert torch.equal(state[q + "intermediate.dense.bias"], full[p + "intermediate.dense.bias"][:64])
        assert torch.equal(state[q + "output.dense.weight"], full[p + "output.dense.weight"][:, :64])
        assert torch.equal(state[q + "output.LayerNorm.weight"], full[p + "output.LayerNorm.weight"])
    # a copy: changing the slice leaves the original alone
    with torch.no_grad():
        slim.encoder.layer[0].attention.self.query.weight.zero_()
    assert model.encoder.layer[3].attention.self.query.weight.abs().sum() > 0


def test_slice_without_pooler_and_of_a_slim_model():
    torch.manual_seed(0)
    model = BertModel(tiny_bert().config, add_pooling_layer=False).eval()
    slim = slice_bert(model, 3, 100, [0, 1, 2])
    assert slim.pooler is None
    slimmer = slice_bert(slim, 2, 50, [2, 0])  # a slim_bert model slices further
    torch.testing.assert_close(outputs(slimmer), outputs(reference(model, 2, 50, [2, 0])), atol=1e-5, rtol=0)


def test_rejects_other_models_and_bad_sizes():
    albert = AlbertModel(AlbertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100))
    with pytest.raises(ValueError, match="only BERT"):
        slice_bert(albert, 2, 64, [0])
    model = tiny_bert()
    for heads, neurons, layers in [
        (0, 64, [0]),
        (5, 64, [0]),
        (2, 0, [0]),
        (2, 129, [0]),
        (2, 64, []),
        (2, 64, [4]),
        (2, 64, [1, 1]),
    ]:
        with pytest.raises(ValueError):
            slice_bert(model, heads, neurons, layers)


def test_task_model_exports_its_encoder_without_pooler(tmp_path):
    torch.manual_seed(0)
    model = BertForTokenClassification(BertConfig(**{**tiny_bert().config.to_dict(), "num_labels": 5})).eval()
    assert model.bert.pooler is None
    directory = export_subnetwork(model, 2, 64, [0, 2], tmp_path / "slim")
    loaded, info = AutoModel.from_pretrained(directory, trust_remote_code=True, output_loading_info=True)
    assert loaded.pooler is None and not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(outputs(loaded.eval()), outputs(reference(model.bert, 2, 64, [0, 2])), atol=1e-5, rtol=0)
