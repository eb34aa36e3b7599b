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

import logging

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
    result = []
    for i, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for token_id, word_id in zip(encoded["input_ids"][i], encoded.word_ids(i), strict=True):
            if word_id is not None:
                pieces[word_id].append(token_id)
        result.append([p if p else [tokenizer.unk_token_id] for p in pieces])
    return result


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
    budget = max_length - 2
    out: dict[str, list] = {k: [] for k in ROW_KEYS}
    all_pieces = word_subwords(tokenizer, batch["words"])
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
