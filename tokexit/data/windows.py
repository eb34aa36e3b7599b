"""Long sentences: split into overlapping windows of whole words, and give each word one owner window.

A sentence whose subwords do not fit the backbone is cut into windows; every word is predicted by exactly one
window, the one in which it has the most context on its narrower side. Nothing is truncated.
"""

from __future__ import annotations

import math


def word_windows(subword_counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Word spans [start, end) whose subwords fit in ``budget``; consecutive windows overlap by about half.

    ``subword_counts[j]`` is the number of subwords of word j (each must be in 1..budget).
    """
    n = len(subword_counts)
    if sum(subword_counts) <= budget:
        return [(0, n)]
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and used + subword_counts[end] <= budget:
            used += subword_counts[end]
            end += 1
        windows.append((start, end))
        if end == n:
            return windows
        # next window starts so that it repeats about half of this one's subwords as left context
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + subword_counts[next_start - 1] <= budget // 2:
            next_start -= 1
            overlap += subword_counts[next_start]
        start = next_start


def window_owners(windows: list[tuple[int, int]], num_words: int) -> list[int]:
    """For each word, the index of the window that predicts it.

    A word's context in a window is the number of words between it and the nearer window edge that is not a
    sentence edge; the window with the most context wins (the earlier one on ties).
    """
    owners = [-1] * num_words
    best = [-1.0] * num_words
    for w, (start, end) in enumerate(windows):
        for j in range(start, end):
            left = j - start if start > 0 else math.inf
            right = end - 1 - j if end < num_words else math.inf
            context = min(left, right)
            if context > best[j]:
                best[j], owners[j] = context, w
    return owners
