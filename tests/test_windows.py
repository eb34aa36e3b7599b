"""Long sentences: windows fit the budget, cover every word, and each word has exactly one owner."""

from __future__ import annotations

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


def test_window_owner_prefers_context():
    windows = word_windows([1] * 10, 6)  # [(0,6), (3,9)?...] overlapping windows
    owners = window_owners(windows, 10)
    assert owners[0] == 0 and owners[-1] == len(windows) - 1
    # a word in an overlap goes to the window where it is further from a cut edge
    s1, e1 = windows[1]
    mid = (s1 + windows[0][1] - 1) // 2
    assert owners[mid] in (0, 1)


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
