"""Words and tags -> subword inputs ready for the model (one row per input).

Two contexts (``data.context``):

* ``sentence``: every sentence is encoded on its own, ``[CLS] sentence [SEP]``.
* ``document``: the sentences of one document (see ``Sentence.document``) are packed, in file order, into
  inputs of up to ``max_length`` subwords, ``[CLS] s1 s2 ... [SEP]`` (:func:`pack_sentences`); sentences of
  different documents never share an input, and a sentence is never split across inputs.

In both, a sentence longer than the limit alone is cut into overlapping windows, each of its words owned by
one window (:mod:`tokexit.data.windows`), and is an input (or several) of its own. Every word is predicted
exactly once, and each row says, per word, its sentence and its index there (``word_sentence``,
``word_index``), so predictions go back to their sentences whatever the packing.

Models and exit policies see an input as one sequence: in document mode attention spans the packed sentences,
and the token-window exit rule's neighbours of a word near a sentence edge include the adjacent sentence's
words (same document only). A file without document marks is one document, so its sentences are packed
consecutively up to the limit (for independent sentences, e.g. tweets, keep ``context=sentence``).
"""

from __future__ import annotations

import itertools
import logging
import operator
from dataclasses import dataclass

import numpy as np

from tokexit.data.windows import window_owners, word_windows

log = logging.getLogger(__name__)

IGNORE = -100
CONTEXTS = ("sentence", "document")
ROW_KEYS = ("input_ids", "word_positions", "labels", "owned", "sentence_id", "word_offset", "word_sentence",
            "word_index")


def check_context(context: str) -> str:
    """``context`` itself, or ValueError naming the choices."""
    if context not in CONTEXTS:
        raise ValueError(f"data.context must be one of {'|'.join(CONTEXTS)}, not {context!r}")
    return context


def special_ids(tokenizer) -> tuple[int, int]:
    """The ids that open and close a sequence ([CLS]/[SEP], <s>/</s>)."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if first is None or last is None:
        raise ValueError("the tokenizer has neither [CLS]/[SEP] nor <s>/</s> tokens")
    return first, last


def word_subwords(tokenizer, sentences: list[list[str]]) -> list[list[list[int]]]:
    """Subword ids of every word of every sentence. A word the tokenizer maps to nothing gets [UNK]."""
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
    return [group_subwords(encoded["input_ids"][i], encoded.word_ids(i), len(words), tokenizer.unk_token_id)
            for i, words in enumerate(sentences)]


def group_subwords(ids: list[int], word_ids: list[int | None], num_words: int, unk_id: int) -> list[list[int]]:
    """One sentence's subword ids grouped by word; a word the tokenizer maps to nothing gets [UNK]."""
    pieces: list[list[int]] = [[] for _ in range(num_words)]
    for token_id, word_id in zip(ids, word_ids, strict=True):
        if word_id is not None:
            pieces[word_id].append(token_id)
    return [p if p else [unk_id] for p in pieces]


def rust_tokenizer(tokenizer):
    """The ``tokenizers.Tokenizer`` to which ``tokenizer(sentences, is_split_into_words=True,
    add_special_tokens=False)`` hands the words and nothing else, or None where the call may do more (a class
    with its own encoding, truncation or padding left set on the backend, another transformers)."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:
        return None
    cls = type(tokenizer)
    if not (isinstance(tokenizer, TokenizersBackend) and cls.__call__ is PreTrainedTokenizerBase.__call__
            and cls._encode_plus is TokenizersBackend._encode_plus and not hasattr(tokenizer, "_switch_to_input_mode")):
        return None
    backend = tokenizer.backend_tokenizer
    plain = (backend.truncation is None and backend.padding is None
             and backend.encode_special_tokens == bool(tokenizer.split_special_tokens))
    return backend if plain else None


def tokenize_words(tokenizer, sentences: list[list[str]]) -> tuple[list[list[int]], list[list[int | None]]]:
    """What ``tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)`` gives, per sentence:
    the subword ids and the word of each (None: no word). Straight from the Rust tokenizer where that is the
    same (:func:`rust_tokenizer`): transformers' conversion of its output builds three Python lists per sentence
    (and their garbage collection, a full collection every few calls in a large process, costs more than the
    conversion)."""
    if not sentences:
        return [], []
    backend = rust_tokenizer(tokenizer)
    if backend is not None:
        encodings = backend.encode_batch(sentences, add_special_tokens=False, is_pretokenized=True)
        return [e.ids for e in encodings], [e.word_ids for e in encodings]
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False, verbose=False)
    return encoded["input_ids"], [encoded.word_ids(i) for i in range(len(sentences))]


def pack_sentences(sizes: list[int], documents: list[int], budget: int) -> list[list[int]]:
    """Group sentences (indices into ``sizes``) into inputs of at most ``budget`` subwords, greedily, in order.

    ``sizes[i]`` is the number of subwords of sentence i, ``documents[i]`` its document. Consecutive sentences
    of one document share an input while their subwords fit; a new document always starts a new input; a
    sentence larger than ``budget`` is a group of its own (it is then windowed); empty sentences are left out.
    Every non-empty sentence is in exactly one group, and the groups, read in order, list them in order.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, (size, doc) in enumerate(zip(sizes, documents, strict=True)):
        if size == 0:
            continue
        if current and (documents[current[0]] != doc or used + size > budget):
            groups.append(current)
            current, used = [], 0
        if size > budget:
            groups.append([i])
            continue
        current.append(i)
        used += size
    if current:
        groups.append(current)
    return groups


def encode_batch(
    batch: dict[str, list],
    *,
    tokenizer,
    label_to_id: dict[str, int] | None,
    max_length: int,
    context: str = "sentence",
) -> dict[str, list]:
    """``datasets.map(batched=True)`` function: sentences -> inputs (one sentence, several, or a window).

    In: ``words`` (list of words), ``tags`` (list of tags or None), ``sentence_id``, and for
    ``context="document"`` also ``document`` (a document's sentences must all be in the same call: map with
    ``batch_size=None``).
    Out, one row per input: ``input_ids``, ``word_positions`` (subword index of each word's first subword),
    ``labels`` (label id per word, -100 when unknown or unlabelled), ``owned`` (1 when this input predicts
    the word), ``word_sentence`` and ``word_index`` (per word: its sentence id and its index there),
    ``sentence_id`` and ``word_offset`` (the same two for the input's first word).
    """
    check_context(context)
    first, last = special_ids(tokenizer)
    return encode_pieces(batch, word_subwords(tokenizer, batch["words"]), (first, last), label_to_id=label_to_id,
                         max_length=max_length, context=context)


def encode_pieces(batch: dict[str, list], all_pieces: list[list[list[int]]], specials: tuple[int, int], *,
                  label_to_id: dict[str, int] | None, max_length: int, context: str) -> dict[str, list]:
    """:func:`encode_batch` after tokenization: ``all_pieces`` (per sentence, per word, its subword ids, at
    least one; see :func:`word_subwords`) and ``specials`` (the opening and closing ids) -> the rows.
    A word's pieces beyond ``max_length - 2`` are cut off (in place)."""
    first, last = specials
    budget = max_length - 2
    out: dict[str, list] = {k: [] for k in ROW_KEYS}
    for sid, pieces in zip(batch["sentence_id"], all_pieces, strict=True):
        for j, p in enumerate(pieces):  # only the first subword is read; keep the word, cut its tail of pieces
            if len(p) > budget:
                log.warning("sentence %d: word %d has %d subwords, keeping the first %d", sid, j, len(p), budget)
                pieces[j] = p[:budget]
    sizes = [sum(len(p) for p in pieces) for pieces in all_pieces]
    if context == "document":
        groups = pack_sentences(sizes, batch["document"], budget)
    else:
        groups = [[i] for i, words in enumerate(batch["words"]) if words]

    def emit(segments: list[tuple[int, int, int, list[int]]]) -> None:
        """One input from (sentence row, first word, end word, owned flag per word) segments."""
        ids, positions, labels, owned, word_sentence, word_index = [first], [], [], [], [], []
        for i, start, end, own in segments:
            tags, sid = batch["tags"][i], batch["sentence_id"][i]
            for j in range(start, end):
                positions.append(len(ids))
                ids.extend(all_pieces[i][j])
            if tags is None or label_to_id is None:
                labels += [IGNORE] * (end - start)
            else:
                labels += [label_to_id.get(t, IGNORE) for t in tags[start:end]]
            owned += own
            word_sentence += [sid] * (end - start)
            word_index += range(start, end)
        ids.append(last)
        row = {"input_ids": ids, "word_positions": positions, "labels": labels, "owned": owned,
               "sentence_id": word_sentence[0], "word_offset": word_index[0], "word_sentence": word_sentence,
               "word_index": word_index}
        for k in ROW_KEYS:
            out[k].append(row[k])

    for group in groups:
        if len(group) > 1:  # whole sentences that fit together: every word owned
            emit([(i, 0, len(batch["words"][i]), [1] * len(batch["words"][i])) for i in group])
            continue
        i = group[0]
        n = len(batch["words"][i])
        windows = word_windows([len(p) for p in all_pieces[i]], budget)
        owners = window_owners(windows, n)
        for w, (start, end) in enumerate(windows):
            emit([(i, start, end, [int(owners[j] == w) for j in range(start, end)])])
    return out


def ragged_index(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every element of rows of ``lengths`` laid end to end: two (sum(lengths),) arrays."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return rows, np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def _flat(lists, total: int) -> np.ndarray:
    """Lists of ints, concatenated: (total,) int64."""
    return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=total)


def _lengths(lists) -> np.ndarray:
    return np.fromiter(map(len, lists), dtype=np.int64)


@dataclass
class EncodedRows:
    """Model inputs (the rows of :func:`encode_batch`) as flat int64 arrays, row after row.

    Row r's subwords are ``input_ids[a:a + n_tok[r]]`` with ``a = n_tok[:r].sum()``; its words (``word_positions``,
    ``labels``, ``owned``, ``word_sentence``, ``word_index``) likewise by ``n_word``. ``sentence_id`` and
    ``word_offset`` (R,) are those of each row's first word.
    """

    input_ids: np.ndarray  # (sum n_tok,)
    n_tok: np.ndarray  # (R,)
    word_positions: np.ndarray  # (sum n_word,)
    labels: np.ndarray  # (sum n_word,)
    owned: np.ndarray  # (sum n_word,)
    word_sentence: np.ndarray  # (sum n_word,)
    word_index: np.ndarray  # (sum n_word,)
    n_word: np.ndarray  # (R,)
    sentence_id: np.ndarray  # (R,)
    word_offset: np.ndarray  # (R,)

    def __len__(self) -> int:
        return len(self.n_tok)

    @classmethod
    def from_rows(cls, rows: list[dict]) -> EncodedRows:
        """Rows as dicts of lists (:data:`ROW_KEYS`); a row without ``word_sentence`` / ``word_index`` (one
        sentence or window) gets them from its ``sentence_id`` and ``word_offset``."""
        b = len(rows)
        n_tok = _lengths(r["input_ids"] for r in rows)
        n_word = _lengths(r["word_positions"] for r in rows)
        total = int(n_word.sum())
        sentence_id = np.fromiter((r["sentence_id"] for r in rows), dtype=np.int64, count=b)
        word_offset = np.fromiter((r["word_offset"] for r in rows), dtype=np.int64, count=b)
        word_row, word_col = ragged_index(n_word)
        word_sentence = sentence_id[word_row]  # (sum n_word,) rows of one sentence: from their first word's
        word_index = word_offset[word_row] + word_col
        listed = [r for r in rows if "word_sentence" in r]  # rows that name every word's sentence
        if listed:
            has = np.fromiter(("word_sentence" in r for r in rows), dtype=bool, count=b)[word_row]
            word_sentence[has] = _flat((r["word_sentence"] for r in listed), int(has.sum()))
            word_index[has] = _flat((r["word_index"] for r in listed), int(has.sum()))
        return cls(_flat((r["input_ids"] for r in rows), int(n_tok.sum())), n_tok,
                   _flat((r["word_positions"] for r in rows), total), _flat((r["labels"] for r in rows), total),
                   _flat((r["owned"] for r in rows), total), word_sentence, word_index, n_word, sentence_id,
                   word_offset)

    @classmethod
    def from_columns(cls, columns: dict[str, list]) -> EncodedRows:
        """:func:`encode_batch`'s output (columns of :data:`ROW_KEYS`)."""
        n_tok, n_word = _lengths(columns["input_ids"]), _lengths(columns["word_positions"])
        tokens, words = int(n_tok.sum()), int(n_word.sum())
        return cls(_flat(columns["input_ids"], tokens), n_tok,
                   *(_flat(columns[k], words) for k in ("word_positions", "labels", "owned", "word_sentence",
                                                        "word_index")),
                   n_word, np.asarray(columns["sentence_id"], dtype=np.int64).reshape(-1),
                   np.asarray(columns["word_offset"], dtype=np.int64).reshape(-1))

    @classmethod
    def concat(cls, parts: list[EncodedRows]) -> EncodedRows:
        """The rows of ``parts``, one after the other."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def take(self, order: np.ndarray) -> EncodedRows:
        """Rows ``order[0]``, ``order[1]``, ... (an index array of rows)."""
        def gather(lengths: np.ndarray) -> np.ndarray:  # (sum lengths[order],) flat index of the new elements
            starts, chosen = np.cumsum(lengths) - lengths, lengths[order]
            return np.repeat(starts[order] - (np.cumsum(chosen) - chosen), chosen) + np.arange(int(chosen.sum()))

        tok, word = gather(self.n_tok), gather(self.n_word)
        return EncodedRows(self.input_ids[tok], self.n_tok[order], self.word_positions[word], self.labels[word],
                           self.owned[word], self.word_sentence[word], self.word_index[word], self.n_word[order],
                           self.sentence_id[order], self.word_offset[order])


def encode_sentences(sentences: list[list[str]], tokenizer, max_length: int) -> EncodedRows:
    """Unlabelled sentences (ids 0, 1, ...), each alone (``context="sentence"``) -> exactly the rows, in the
    order, that :func:`encode_batch` gives (no row for an empty sentence).

    The common case is vectorised over the tokenizer's output (:func:`tokenize_words`, the whole list in one call):
    a sentence whose subwords fit ``max_length - 2``
    and where every word has at least one subword is ``[CLS] subwords [SEP]`` with each word's first subword
    where its word id starts. Any other sentence (windowed, [UNK] for a word the tokenizer maps to nothing, a
    subword of no word) goes through :func:`encode_pieces`, the general path.
    """
    first, last = special_ids(tokenizer)
    budget = max_length - 2
    ids, word_ids = tokenize_words(tokenizer, sentences)
    n_sent = len(sentences)
    n_tok, n_words = _lengths(ids), _lengths(sentences)  # (S,) subwords (no specials) and words per sentence
    unowned = np.fromiter(map(operator.contains, word_ids, itertools.repeat(None)), dtype=bool, count=n_sent)
    known = word_ids  # subwords of no word (None) -> -1; such sentences take the general path
    if unowned.any():
        known = [[-1 if w is None else w for w in ws] if u else ws for ws, u in zip(word_ids, unowned, strict=True)]
    total = int(n_tok.sum())
    flat_ids, flat_words = _flat(ids, total), _flat(known, total)  # (T,) all sentences' subwords
    tok_sent, tok_col = ragged_index(n_tok)  # (T,)
    # word ids must run 0, 0, 1, 2, 2, ..., n-1 within a sentence: each word's subwords consecutive, none empty
    previous = np.where(tok_col == 0, -1, np.roll(flat_words, 1))
    step = flat_words - previous  # (T,) 1 where a word starts, 0 inside one
    broken = np.bincount(tok_sent[(step != 0) & (step != 1)], minlength=n_sent) > 0  # (S,)
    last_word = np.full(n_sent, -1)
    last_word[n_tok > 0] = flat_words[np.cumsum(n_tok)[n_tok > 0] - 1]
    fast = (n_words > 0) & (n_tok <= budget) & ~unowned & ~broken & (last_word == n_words - 1)
    slow = np.flatnonzero((n_words > 0) & ~fast)

    # fast rows: [first] subwords [last]; one row per sentence, every word owned
    keep = fast[tok_sent]  # (T,) subwords of fast sentences
    rows = np.flatnonzero(fast)  # (F,) their sentence ids
    row_tok = n_tok[rows] + 2
    input_ids = np.empty(int(row_tok.sum()), dtype=np.int64)
    ends = np.cumsum(row_tok)
    input_ids[ends - row_tok], input_ids[ends - 1] = first, last
    inner = np.ones(len(input_ids), dtype=bool)
    inner[ends - row_tok] = inner[ends - 1] = False
    input_ids[inner] = flat_ids[keep]
    n_word = n_words[rows]
    word_row, word_col = ragged_index(n_word)
    parts = [EncodedRows(input_ids, row_tok, tok_col[keep & (step == 1)] + 1, np.full(len(word_row), IGNORE),
                         np.ones(len(word_row), dtype=np.int64), rows[word_row], word_col, n_word, rows,
                         np.zeros(len(rows), dtype=np.int64))]
    if len(slow):
        pieces = [group_subwords(ids[i], word_ids[i], int(n_words[i]), tokenizer.unk_token_id) for i in slow]
        batch = {"words": [sentences[i] for i in slow], "tags": [None] * len(slow), "sentence_id": slow.tolist()}
        parts.append(EncodedRows.from_columns(encode_pieces(batch, pieces, (first, last), label_to_id=None,
                                                            max_length=max_length, context="sentence")))
    merged = EncodedRows.concat(parts)
    # back to encode_batch's order: by sentence, a sentence's windows in order (stable: they are in order)
    return merged.take(np.argsort(merged.sentence_id, kind="stable"))
