"""The ``reduce`` fate (TR-BERT token reduction) and its training: keeping everything is the full model; a
sentence's result never depends on its batch neighbours; every word is labelled once; removed tokens are no keys;
FLOPs equal torch's counter; REINFORCE moves the kept ratio the way the reward asks; models with a selector
round-trip; ``train(model=token_reduction)`` runs end to end for a tagger and a classifier."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import synthetic_sentences, write_conll
from hypothesis import given, settings
from hypothesis import strategies as st
from test_classification_engine import random_batch as classify_batch
from test_classification_pipeline import write_sentiment
from test_early_exit import CONFIG, RandomExit, random_batch
from test_pipeline import config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from tokexit.backbones import load_tokenizer
from tokexit.data.classification import ClassificationTask
from tokexit.data.tagging import LabelSet
from tokexit.engine import MultiExitEncoder, early_exit_forward
from tokexit.engine.classifier import MultiExitClassifier
from tokexit.engine.classify_exit import classify_early_exit
from tokexit.engine.selector import TokenSelector, default_steps
from tokexit.exits import NoExit, PatienceExit, TokenWindowExit
from tokexit.fates import Drop, TokenReduction
from tokexit.fates.reduce import keep_top
from tokexit.lightning.rollouts import SampledReduction, kept_ratios, log_probs, reinforce_loss, rollout
from tokexit.model_io import load_classifier, load_tagger, save_model
from tokexit.train import train

SPECIALS = (2, 3)  # [CLS] and [SEP] of the random batches
STEPS = default_steps(CONFIG.num_hidden_layers)  # [1, 2]


def selector(seed: int, spread: float = 3.0) -> TokenSelector:
    """A random selector whose keep probabilities spread over (0, 1) (``spread`` = 0: all 0.5)."""
    torch.manual_seed(seed + 100)
    s = TokenSelector(CONFIG.hidden_size, STEPS, SPECIALS)
    for policy in s.policies:
        torch.nn.init.normal_(policy[2].weight, std=spread)
        torch.nn.init.zeros_(policy[2].bias)
    return s


@functools.cache
def tagger(seed: int = 0) -> MultiExitEncoder:
    torch.manual_seed(seed)
    return MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5, selector=selector(seed)).eval()


@functools.cache
def classifier(seed: int = 0, pooling: str = "mean") -> MultiExitClassifier:
    torch.manual_seed(seed)
    model = MultiExitClassifier(AutoModel.from_config(CONFIG), num_labels=3, pooling=pooling, selector=selector(seed))
    for head in model.exits:
        torch.nn.init.normal_(head.classifier.weight, std=1.0)
    return model.eval()


def sentences(b: int, seed: int) -> dict[str, torch.Tensor]:
    """Classification batch with [CLS] first and [SEP] last."""
    batch = classify_batch(b, seed)
    n = batch["attention_mask"].sum(1)
    batch["input_ids"][:, 0] = 2
    batch["input_ids"][torch.arange(b), n - 1] = 3
    return batch


def tag(enc, batch, fate, policy=None):
    return early_exit_forward(enc, policy or NoExit(), batch["input_ids"], batch["attention_mask"],
                              batch["word_positions"], batch["token_word"], fate=fate)


def classify(model, batch, fate, policy=None):
    return classify_early_exit(model, policy or NoExit(), batch["input_ids"], batch["attention_mask"],
                               batch["token_type_ids"], fate=fate)


def fates() -> list[TokenReduction]:
    return [TokenReduction(threshold=0.5), TokenReduction(keep_ratio=0.5),
            TokenReduction(threshold=0.5, label_removed="exit_head"), TokenReduction(keep_ratio=0.3)]


def padded(computed: list[torch.Tensor], steps: int) -> torch.Tensor:
    """(S, B, T) tokens computed per step, with nothing computed in steps the run did not reach."""
    return torch.stack(computed + [computed[-1] & False] * (steps - len(computed)))


def test_keeping_everything_is_the_full_model():
    for seed in range(3):
        enc, batch = tagger(seed), random_batch(5, 12, seed)
        words, real = batch["word_positions"] >= 0, batch["attention_mask"].bool()
        with torch.no_grad():
            full = enc(batch["input_ids"], batch["attention_mask"], batch["word_positions"])[-1]  # (N, C)
            states = enc.hidden_states(batch["input_ids"], batch["attention_mask"])[-1]
        for fate in (TokenReduction(threshold=0.0), TokenReduction(keep_ratio=1.0),
                     TokenReduction(threshold=0.0, label_removed="exit_head")):
            out = tag(enc, batch, fate)
            assert torch.equal(out.predictions[words], full.argmax(-1))
            assert (out.exit_layers[words] == CONFIG.num_hidden_layers).all()
            assert (out.hidden - states)[real].abs().max() <= 1e-5
        for pooling in ("cls", "mean"):
            model, batch = classifier(seed, pooling), sentences(6, seed)
            with torch.no_grad():
                full = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[-1]
            for fate in (TokenReduction(threshold=0.0), TokenReduction(keep_ratio=1.0)):
                assert (classify(model, batch, fate).logits - full).abs().max() <= 1e-5


def test_the_default_fate_removes_something_and_specials_stay():
    enc, batch = tagger(), random_batch(8, 12, 1)
    out = tag(enc, batch, TokenReduction())
    words = batch["word_positions"] >= 0
    assert (out.exit_layers[words] < CONFIG.num_hidden_layers).any()  # some words left early
    assert (out.exit_layers[words] == CONFIG.num_hidden_layers).any()
    special = (batch["token_word"] < 0) & batch["attention_mask"].bool()
    for computed in out.record.computed:  # specials go on while their sentence has a word left
        assert torch.equal(computed & special, special & computed.any(1, keepdim=True))
    model, batch = classifier(), sentences(8, 1)
    out = classify(model, batch, TokenReduction())
    last = out.record.computed[-1]
    real = batch["attention_mask"].bool()
    assert torch.equal(last | ~torch.isin(batch["input_ids"], torch.tensor(SPECIALS)) | ~real, torch.ones_like(last))
    assert int(last.sum()) < int(real.sum())


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(1, 12), st.integers(0, 10_000), st.sampled_from([0, 1, 2, 3]),
       st.booleans())
def test_tagger_does_not_depend_on_batch_neighbours(b, max_words, seed, which, window):
    enc, batch, fate = tagger(seed % 3), random_batch(b, max_words, seed), fates()[which]
    policy = (lambda: TokenWindowExit(0.3, window=3)) if window else NoExit
    together = tag(enc, batch, fate, policy())
    for i in range(b):
        t, w = int(batch["attention_mask"][i].sum()), int((batch["word_positions"][i] >= 0).sum())
        one = {k: v[i: i + 1, : (w if k == "word_positions" else t)] for k, v in batch.items()}
        alone = tag(enc, one, fate, policy())
        assert torch.equal(alone.predictions[0], together.predictions[i, :w])
        assert torch.equal(alone.exit_layers[0], together.exit_layers[i, :w])
        assert torch.allclose(alone.flops[0], together.flops[i])
        assert (alone.hidden[0] - together.hidden[i, :t]).abs().max() <= 1e-5


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 8), st.integers(0, 10_000), st.sampled_from([0, 1, 3]), st.sampled_from(["cls", "mean"]),
       st.booleans())
def test_classifier_does_not_depend_on_batch_neighbours(b, seed, which, pooling, patience):
    model, batch, fate = classifier(seed % 3, pooling), sentences(b, seed), fates()[which]
    policy = (lambda: PatienceExit(patience=1)) if patience else NoExit
    together = classify(model, batch, fate, policy())
    for i in range(b):
        n = int(batch["attention_mask"][i].sum())
        alone = classify(model, {k: v[i: i + 1, :n] for k, v in batch.items()}, fate, policy())
        assert (alone.logits[0] - together.logits[i]).abs().max() <= 1e-5
        assert int(alone.exit_layers[0]) == int(together.exit_layers[i])
        assert torch.allclose(alone.flops[0], together.flops[i])


@pytest.mark.parametrize("label_removed", ["last_head", "exit_head"])
def test_every_word_is_labelled_exactly_once(label_removed):
    """One head application per word, by the head ``label_removed`` names, on the word's state at removal (the
    run's output state at its position)."""
    enc = tagger(1)
    rows_seen = []
    hooks = [head.register_forward_hook(lambda m, args, out: rows_seen.append(len(out))) for head in enc.exits]
    try:
        early = 0
        for seed in range(6):
            batch = random_batch(6, 12, seed)
            words = batch["word_positions"] >= 0
            rows_seen.clear()
            out = tag(enc, batch, TokenReduction(keep_ratio=0.5, label_removed=label_removed))
            assert sum(rows_seen) == int(words.sum())
            layers = out.exit_layers[words]
            assert ((layers >= 1) & (layers <= CONFIG.num_hidden_layers)).all()
            early += int((layers < CONFIG.num_hidden_layers).sum())
            rows, cols = words.nonzero(as_tuple=True)
            hidden = out.hidden[rows, batch["word_positions"][rows, cols]]  # (N, H) restored states
            with torch.no_grad():
                if label_removed == "last_head":
                    expected = enc.exits[-1](hidden).argmax(-1)
                else:
                    expected = torch.stack([enc.exits[e - 1](h) for e, h in zip(layers.tolist(), hidden,
                                                                                strict=True)]).argmax(-1)
            assert torch.equal(out.predictions[words], expected)
        assert early > 10
    finally:
        for h in hooks:
            h.remove()


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 10), st.integers(0, 10_000), st.sampled_from([0, 1, 3]))
def test_removed_tokens_are_no_keys(b, max_words, seed, which):
    """Packed reduce == the dense masked definition with drop (removed tokens are no keys), and differs from
    keeping them as keys; the same for a classifier pooling what is left."""
    enc, batch, fate = tagger(seed % 3), random_batch(b, max_words, seed), fates()[which]
    out = tag(enc, batch, fate)
    assert all(torch.equal(k, c) for k, c in zip(out.record.keys, out.record.computed, strict=True))
    masks = padded(out.record.computed, CONFIG.num_hidden_layers)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        dense = enc.hidden_states(batch["input_ids"], batch["attention_mask"], token_masks=masks, fate=Drop())[-1]
        as_keys = enc.hidden_states(batch["input_ids"], batch["attention_mask"], token_masks=masks)[-1]
    assert (dense - out.hidden)[real].abs().max() <= 1e-5
    if any(bool((c.any(1) & (real & ~c).any(1)).any()) for c in out.record.computed[1:]):
        assert (as_keys - out.hidden)[real].abs().max() > 1e-6

    model, batch = classifier(seed % 3), sentences(b, seed)
    out = classify(model, batch, fate)
    masks = torch.stack(out.record.computed)
    with torch.no_grad():
        dense = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                    token_masks=masks, fate=Drop())[-1]
        logits = model.exits[-1](model.pooler(dense, masks[-1]))
    assert (logits - out.logits).abs().max() <= 1e-5


def test_flops_match_torch_flop_counter():
    """Batch size 1: the loop's record (layers, heads, selector) counts exactly what runs."""
    enc, model = tagger(), classifier()
    removed = 0
    for t, seed in ((9, 1), (23, 2), (40, 3)):
        batch = random_batch(1, t, seed)
        for fate in fates():
            for policy in (NoExit(), RandomExit(0.3, seed), TokenWindowExit(0.5, window=1)):
                with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                    out = tag(enc, batch, fate, policy)
                assert int(out.flops[0]) == counter.get_total_flops(), (t, fate.describe(), policy.name)
                removed += int((out.exit_layers[0] < CONFIG.num_hidden_layers).any())
        batch = sentences(1, seed)
        for fate in fates():
            for policy in (NoExit(), PatienceExit(patience=1)):
                with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                    out = classify(model, batch, fate, policy)
                assert int(out.flops[0]) == counter.get_total_flops(), (seed, fate.describe(), policy.name)
    assert removed >= 10


def test_keep_top_keeps_the_best_of_each_row():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.2, 0.7, 0.3])
    rows = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    assert keep_top(scores, rows, 0.5).tolist() == [False, True, True, False, False, True, True]
    assert keep_top(scores, rows, 1.0).all() and keep_top(scores, rows, 0.01).sum() == 3
    assert keep_top(scores, rows, torch.tensor([0.3, 0.3, 0.3, 0.3, 1.0, 1.0, 1.0])).tolist() == [False, True, True,
                                                                                          False, True, True, True]


def test_reduce_needs_a_selector_and_valid_settings():
    plain = MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5).eval()
    with pytest.raises(ValueError, match="token selector"):
        tag(plain, random_batch(2, 5, 0), TokenReduction())
    with pytest.raises(ValueError, match="keep_ratio"):
        TokenReduction(keep_ratio=0.0)
    with pytest.raises(ValueError, match="label_removed"):
        TokenReduction(label_removed="first_head")
    with pytest.raises(ValueError, match="steps"):
        TokenSelector(32, [0, 2])
    assert default_steps(6) == [1, 3] and default_steps(12) == [1, 6] and default_steps(3) == [1]


@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_reinforce_moves_the_kept_ratio_the_way_the_reward_asks(alpha):
    """Reward −alpha·(kept ratio) alone: alpha > 0 (fewer tokens pay) lowers the kept ratio, alpha < 0 (keeping
    pays) raises it. The policy starts at p = 0.5 everywhere: half the words go at each of the two points."""
    torch.manual_seed(0)
    enc = MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5, selector=selector(0, spread=0.0)).eval()
    enc.backbone.requires_grad_(False)
    optimizer = torch.optim.Adam(enc.selector.parameters(), lr=3e-2)
    k, batch = 4, random_batch(4, 10, 0)
    many = {key: v.repeat_interleave(k, 0) for key, v in batch.items()}

    def kept() -> float:
        run = rollout(enc, many, many["token_word"], SampledReduction())
        return float(kept_ratios(run.masks, run.removable, enc.selector.steps).mean())

    before = sum(kept() for _ in range(10)) / 10
    for _ in range(150):
        run = rollout(enc, many, many["token_word"], SampledReduction())
        reward = -alpha * kept_ratios(run.masks, run.removable, enc.selector.steps).mean(0)
        loss = reinforce_loss(log_probs(enc.selector, run.decisions, len(reward)), reward, k)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = sum(kept() for _ in range(10)) / 10
    assert 0.25 < before < 0.5  # (1/2 + 1/4) / 2 expected
    assert (after < 0.1) if alpha > 0 else (after > 0.8), (before, after)


def test_models_with_a_selector_round_trip(tmp_path):
    tokenizer = load_tokenizer("minilm-l6")
    enc, batch = tagger(2), random_batch(4, 10, 3)
    save_model(enc, tokenizer, LabelSet(["O", "B-X", "I-X", "B-Y", "I-Y"], "ner"), tmp_path / "tagger", 64)
    meta = json.loads((tmp_path / "tagger" / "tokexit.json").read_text())
    assert meta["selector"] == {"steps": STEPS, "special_ids": list(SPECIALS), "width": 32}
    loaded = load_tagger(tmp_path / "tagger")[0]
    a, b = tag(enc, batch, TokenReduction()), tag(loaded, batch, TokenReduction())
    assert torch.equal(a.predictions, b.predictions) and torch.equal(a.exit_layers, b.exit_layers)

    model, batch = classifier(2), sentences(5, 3)
    task = ClassificationTask(["a", "b", "c"], regression=False, metric="accuracy")
    save_model(model, tokenizer, task, tmp_path / "classifier", 64)
    loaded = load_classifier(tmp_path / "classifier")[0]
    fate = TokenReduction()
    assert torch.equal(classify(model, batch, fate).logits, classify(loaded, batch, fate).logits)

    plain = MultiExitEncoder(AutoModel.from_config(CONFIG), num_labels=5)
    save_model(plain, tokenizer, LabelSet(["O", "B-X", "I-X", "B-Y", "I-Y"], "ner"), tmp_path / "tagger", 64)
    assert not (tmp_path / "tagger" / "selector.safetensors").exists()
    assert load_tagger(tmp_path / "tagger")[0].selector is None


TINY = ["model.backbone_lr=2e-3", "model.head_lr=5e-3", "data.batch_size=8", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
REDUCE = ["model=token_reduction", "model.rollouts=2", "model.warmup_steps=4", "model.policy_lr=1e-2",
          "model.alpha=0.5", "trainer.max_epochs=2"]


def test_train_token_reduction_for_a_tagger(tmp_path):
    files = {"train": write_conll(tmp_path / "train.txt", synthetic_sentences(48, seed=1)),
             "validation": write_conll(tmp_path / "dev.txt", synthetic_sentences(16, seed=2)),
             "test": write_conll(tmp_path / "test.txt", synthetic_sentences(16, seed=3))}
    data = [f"data.{split}_file={path}" for split, path in files.items()]
    train(config("train", ["model=tiny", *TINY, *data, "trainer.max_epochs=2", f"output_dir={tmp_path / 'stage1'}"]))
    result = train(config("train", [*REDUCE, *TINY, *data, f"model.backbone={tmp_path / 'stage1' / 'model'}",
                                    "model.label_removed=exit_head", f"output_dir={tmp_path / 'reduce'}"]))
    assert result["layers"] == [] and result["reduction"]["steps"] == [1]
    assert {"f1", "flops_fraction", "kept_before_layer2"} <= set(result["full_depth"])
    assert 0 < result["full_depth"]["flops_fraction"] < 1.1  # the selector costs ~3% of this tiny model
    model_dir = tmp_path / "reduce" / "model"
    assert (model_dir / "selector.safetensors").is_file()
    assert json.loads((model_dir / "tokexit.json").read_text())["token_reduction"]["label_removed"] == "exit_head"
    encoder, tokenizer, labels, _ = load_tagger(model_dir)
    assert encoder.selector is not None and encoder.selector.steps == (1,)
    batch = random_batch(4, 10, 0)  # ids < 100: valid for any vocabulary
    out = tag(encoder, batch, TokenReduction(label_removed="exit_head"))
    assert (out.exit_layers[batch["word_positions"] >= 0] >= 1).all()


def test_train_token_reduction_for_a_classifier(tmp_path):
    files = {"train": write_sentiment(tmp_path / "train.tsv", 48, 1),
             "validation": write_sentiment(tmp_path / "dev.tsv", 16, 2),
             "test": write_sentiment(tmp_path / "test.tsv", 16, 3)}
    data = ["data=sst2", *[f"data.{split}_file={path}" for split, path in files.items()]]
    train(config("train", ["model=tiny_classifier", "model.pooling=mean", *TINY, *data, "trainer.max_epochs=2",
                           f"output_dir={tmp_path / 'stage1'}"]))
    result = train(config("train", [*REDUCE, *TINY, *data, f"model.backbone={tmp_path / 'stage1' / 'model'}",
                                    f"output_dir={tmp_path / 'reduce'}"]))
    assert result["layers"] == [] and {"accuracy", "flops_fraction"} <= set(result["full_depth"])
    model, tokenizer, task, meta = load_classifier(tmp_path / "reduce" / "model")
    assert model.selector is not None and meta["pooling"] == "mean"
    assert set(model.selector.special_ids.tolist()) >= {tokenizer.cls_token_id, tokenizer.sep_token_id}
    enc = tokenizer(["the film was good", "a very bad plot and a quite bad ending"], padding=True,
                    return_tensors="pt", return_token_type_ids=True)
    out = classify_early_exit(model, NoExit(), enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                              fate=TokenReduction())
    assert out.logits.shape == (2, 2) and (out.exit_layers == 3).all()
    tagging = write_conll(tmp_path / "ner.txt", synthetic_sentences(8, seed=1))
    with pytest.raises(ValueError, match="labels"):  # a classifier cannot be reduced on tagging data
        train(config("train", [*REDUCE, *TINY, f"model.backbone={tmp_path / 'stage1' / 'model'}",
                               *[f"data.{split}_file={tagging}" for split in ("train", "validation", "test")],
                               f"output_dir={tmp_path / 'x'}"]))
