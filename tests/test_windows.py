"""Long sentences: windows fit the budget, cover every word, and each word has exactly one owner."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tokexit.backbones import load_tokenizer
from tokexit.data.encoding import encode_batch
from tokexit.data.windows import window_owners, word_windows


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=80), st.integers(6, 30))
def test_windows_cover_fit_and_own_each_word_once(counts, budget):
    windows = word_windows(counts, budget)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    for (s0, e0), (s1, _) in zip(windows, windows[1:], strict=False):
        assert s0 < s1 <= e0  # progress, and no gap between windows
    for s, e in windows:
        assert sum(counts[s:e]) <= budget
    owners = window_owners(windows, len(counts))
    for j, w in enumerate(owners):
        s, e = windows[w]
        assert s <= j < e


def context(j: int, window: tuple[int, int], num_words: int) -> float:
    """The documented context of word j in a window: words between it and the nearer window edge that is not a
    sentence edge (unbounded when both edges are sentence edges)."""
    start, end = window
    left = j - start if start > 0 else math.inf
    right = end - 1 - j if end < num_words else math.inf
    return min(left, right)


def assert_owners_follow_the_rule(windows: list[tuple[int, int]], num_words: int) -> None:
    owners = window_owners(windows, num_words)
    assert len(owners) == num_words
    for j, w in enumerate(owners):
        assert 0 <= w < len(windows)
        assert windows[w][0] <= j < windows[w][1], (j, w)  # the owner contains the word
        mine = context(j, windows[w], num_words)
        for v, other in enumerate(windows):
            if v == w or not other[0] <= j < other[1]:
                continue
            theirs = context(j, other, num_words)
            assert theirs < mine or (theirs == mine and v > w), (j, w, v)  # most context; earlier window on ties


def test_window_owners_by_hand():
    # 10 one-subword words, budget 6: windows of 6 words that step by 3 (the overlap is budget // 2 subwords)
    windows = word_windows([1] * 10, 6)
    assert windows == [(0, 6), (3, 9), (6, 10)]
    # word 3: context 2 in window 0 (right edge 5), 0 in window 1 -> 0; word 4: 1 and 1, a tie -> the earlier 0;
    # word 5: 0 vs 2 -> 1; word 6: 2 vs 0 -> 1; word 7: 1 vs 1 -> 1; word 8: 0 vs 2 -> 2
    assert window_owners(windows, 10) == [0, 0, 0, 0, 0, 1, 1, 1, 2, 2]
    # uneven words (subwords 3 1 2 2 1 3 1), budget 8: the overlap is counted in subwords (<= 4), not in words
    windows = word_windows([3, 1, 2, 2, 1, 3, 1], 8)
    assert windows == [(0, 4), (2, 6), (4, 7)]
    # word 2: 1 (window 0) vs 0 (window 1); word 3: 0 vs 1; word 4: 1 vs 0; word 5: 0 vs 1 (window 2)
    assert window_owners(windows, 7) == [0, 0, 0, 1, 1, 2, 2]
    # a window's sentence edges are not cuts: the one spanning the whole sentence has unbounded context
    assert window_owners([(0, 3), (0, 8), (5, 8)], 8) == [1] * 8
    assert window_owners([(0, 5)], 5) == [0] * 5


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 60), st.integers(1, 12), st.data())
def test_window_owners_follow_the_rule_for_any_stride(num_words, length, data):
    stride = data.draw(st.integers(1, length))
    windows, start = [], 0
    while True:  # windows of `length` words every `stride` words, the last one cut at the sentence end
        windows.append((start, min(start + length, num_words)))
        if start + length >= num_words:
            break
        start += stride
    assert_owners_follow_the_rule(windows, num_words)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=80), st.integers(6, 30))
def test_window_owners_follow_the_rule_for_word_windows(counts, budget):
    assert_owners_follow_the_rule(word_windows(counts, budget), len(counts))


def test_encode_long_sentence_every_word_predicted_once():
    tok = load_tokenizer("minilm-l6")
    words = [f"word{i}" for i in range(700)] + ["\u200b"]  # long, and a word that tokenises to nothing
    tags = ["O"] * len(words)
    out = encode_batch({"words": [words], "tags": [tags], "sentence_id": [0]}, tokenizer=tok,
                       label_to_id={"O": 0}, max_length=64)
    assert len(out["input_ids"]) > 10
    assert all(len(ids) <= 64 for ids in out["input_ids"])
    owned = sorted(off + j for off, own in zip(out["word_offset"], out["owned"], strict=True)
                   for j, o in enumerate(own) if o)
    assert owned == list(range(len(words)))
    first = out["input_ids"][-1]
    assert first[0] == tok.cls_token_id and first[-1] == tok.sep_token_id
    last_pos = out["word_positions"][-1][-1]
    assert out["input_ids"][-1][last_pos] == tok.unk_token_id  # the empty word became [UNK]
