"""Words and tags -> subword windows ready for the model (one row per window)."""

from __future__ import annotations

import logging

from tokexit.data.windows import window_owners, word_windows

log = logging.getLogger(__name__)

IGNORE = -100


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


def encode_batch(
    batch: dict[str, list],
    *,
    tokenizer,
    label_to_id: dict[str, int] | None,
    max_length: int,
) -> dict[str, list]:
    """``datasets.map(batched=True)`` function: sentences -> windows.

    In: ``words`` (list of words), ``tags`` (list of tags or None), ``sentence_id``.
    Out, one row per window: ``input_ids``, ``word_positions`` (subword index of each word's first subword),
    ``labels`` (label id per word, -100 when unknown or unlabelled), ``owned`` (1 when this window predicts
    the word), ``sentence_id``, ``word_offset`` (index in the sentence of the window's first word).
    """
    first, last = special_ids(tokenizer)
    budget = max_length - 2
    out: dict[str, list] = {k: [] for k in ("input_ids", "word_positions", "labels", "owned", "sentence_id",
                                             "word_offset")}
    all_pieces = word_subwords(tokenizer, batch["words"])
    for words, tags, sid, pieces in zip(batch["words"], batch["tags"], batch["sentence_id"], all_pieces,
                                        strict=True):
        if len(words) == 0:
            continue
        long_words = [j for j, p in enumerate(pieces) if len(p) > budget]
        for j in long_words:  # only the first subword is read; keep the word, cut its tail of pieces
            log.warning("sentence %d: word %d has %d subwords, keeping the first %d", sid, j, len(pieces[j]), budget)
            pieces[j] = pieces[j][:budget]
        counts = [len(p) for p in pieces]
        windows = word_windows(counts, budget)
        owners = window_owners(windows, len(words))
        for w, (start, end) in enumerate(windows):
            ids, positions = [first], []
            for j in range(start, end):
                positions.append(len(ids))
                ids.extend(pieces[j])
            ids.append(last)
            out["input_ids"].append(ids)
            out["word_positions"].append(positions)
            if tags is None or label_to_id is None:
                out["labels"].append([IGNORE] * (end - start))
            else:
                out["labels"].append([label_to_id.get(t, IGNORE) for t in tags[start:end]])
            out["owned"].append([int(owners[j] == w) for j in range(start, end)])
            out["sentence_id"].append(sid)
            out["word_offset"].append(start)
    return out
