"""``collate`` (vectorised with numpy) gives bit-identical batches to the plain per-row, per-word loop it replaced,
on real encoded rows (sentences, long-sentence windows, packed documents) and on random rows."""

from __future__ import annotations

import random

import pytest
import torch

from tokexit.data.encoding import IGNORE, encode_batch
from tokexit.data.tagging import collate


def reference_collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """The loop version (tokexit before the vectorised collate)."""
    b = len(rows)
    t = max(len(r["input_ids"]) for r in rows)
    w = max(len(r["word_positions"]) for r in rows)
    batch = {
        "input_ids": torch.full((b, t), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((b, t), dtype=torch.long),
        "word_positions": torch.full((b, w), -1, dtype=torch.long),
        "labels": torch.full((b, w), IGNORE, dtype=torch.long),
        "owned": torch.zeros((b, w), dtype=torch.bool),
        "token_word": torch.full((b, t), -1, dtype=torch.long),
        "sentence_id": torch.tensor([r["sentence_id"] for r in rows], dtype=torch.long),
        "word_offset": torch.tensor([r["word_offset"] for r in rows], dtype=torch.long),
        "word_sentence": torch.full((b, w), -1, dtype=torch.long),
        "word_index": torch.full((b, w), -1, dtype=torch.long),
    }
    for i, r in enumerate(rows):
        n, m = len(r["input_ids"]), len(r["word_positions"])
        batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["word_positions"][i, :m] = torch.tensor(r["word_positions"])
        batch["labels"][i, :m] = torch.tensor(r["labels"])
        batch["owned"][i, :m] = torch.tensor(r["owned"], dtype=torch.bool)
        if "word_sentence" in r:
            batch["word_sentence"][i, :m] = torch.tensor(r["word_sentence"])
            batch["word_index"][i, :m] = torch.tensor(r["word_index"])
        else:
            batch["word_sentence"][i, :m] = r["sentence_id"]
            batch["word_index"][i, :m] = torch.arange(r["word_offset"], r["word_offset"] + m)
        ends = r["word_positions"][1:] + [n - 1]
        for j, (start, end) in enumerate(zip(r["word_positions"], ends, strict=True)):
            batch["token_word"][i, start:end] = j
    return batch


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


class PieceTokenizer:
    """Each word -> (len(word) + 1) // 3 + 1 subword ids: words of 1 to many subwords, deterministic."""

    cls_token_id, sep_token_id, unk_token_id, pad_token_id = 1, 2, 3, 0

    def __call__(self, sentences, **kwargs):
        ids, word_ids = [], []
        for words in sentences:
            ids.append([10 + len(w) * 7 + k for j, w in enumerate(words) for k in range((len(w) + 1) // 3 + 1)])
            word_ids.append([j for j, w in enumerate(words) for _ in range((len(w) + 1) // 3 + 1)])

        class Encoded(dict):
            def word_ids(self, i):
                return word_ids[i]

        return Encoded(input_ids=ids)


def random_rows(context: str, seed: int, max_length: int) -> list[dict]:
    rng = random.Random(seed)
    sentences = [[rng.choice(["a", "bb", "ccccc", "dddddddd", "e" * 14]) for _ in range(rng.randint(1, 40))]
                 for _ in range(30)]
    tags = [[rng.choice(["O", "B-X", "I-X", "B-Y"]) for _ in s] for s in sentences]
    columns = encode_batch({"words": sentences, "tags": tags, "sentence_id": list(range(30)),
                            "document": [i // 7 for i in range(30)]}, tokenizer=PieceTokenizer(),
                           label_to_id={"O": 0, "B-X": 1, "I-X": 2}, max_length=max_length, context=context)
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("context", ["sentence", "document"])
@pytest.mark.parametrize("max_length", [24, 512])  # 24: long sentences are windowed (partly owned words)
def test_collate_matches_loop_on_encoded_rows(context, max_length):
    rows = random_rows(context, seed=max_length, max_length=max_length)
    assert any(0 in r["owned"] for r in rows) == (max_length == 24)
    for size in (1, 3, 8, len(rows)):
        for i in range(0, len(rows), size):
            assert_same(collate(rows[i:i + size], pad_id=0), reference_collate(rows[i:i + size], pad_id=0))


def test_collate_matches_loop_without_word_columns():
    """Rows of one sentence or window each may carry only ``sentence_id`` and ``word_offset``."""
    rows = random_rows("sentence", seed=5, max_length=24)
    for r in rows:
        del r["word_sentence"], r["word_index"]
    assert_same(collate(rows, pad_id=7), reference_collate(rows, pad_id=7))
    mixed = [r if k % 3 else random_rows("document", seed=6, max_length=64)[k % 4] for k, r in enumerate(rows)]
    assert_same(collate(mixed, pad_id=0), reference_collate(mixed, pad_id=0))
