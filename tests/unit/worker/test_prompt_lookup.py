"""Prompt lookup keeps a sequence's place in the text it copies (worker/engine/drafting/ngrams.py):
after the answer changes a word, one token near that place finds the text again, and of an
n-gram's occurrences the one near the place wins over the latest."""

from __future__ import annotations

from herd.worker.engine.drafting import ngrams, speculative

# A source text (positions 0-9), other text (10-39), text that repeats a bit of the source
# (40-44) and the prompt's end (45); the answer comes after.
SOURCE = [1, 2, 3, 4, 5, 6, 7, 8, 9, 20]
PAD = list(range(100, 130))
OTHER = [40, 4, 5, 41, 42]
END = [50]
PROMPT = SOURCE + PAD + OTHER + END


def _draft(index: ngrams.NgramIndex, k: int, near: int | None = None) -> list[int]:
    """Up to k tokens from where the index says a draft starts."""
    start = index.find(near)
    return [] if start is None else index.history[start:start + k]


def test_ngram_index_drafts_the_latest_continuation() -> None:
    index = ngrams.NgramIndex()
    index.sync([1, 2, 3, 4, 9, 2, 3, 5, 6, 2, 3])
    assert _draft(index, 4) == [5, 6, 2, 3]  # [2, 3] was last followed by 5
    index.sync([1, 2, 3, 4, 9, 2, 3, 5, 6, 2, 3, 7])
    assert _draft(index, 4) == []
    index = ngrams.NgramIndex()
    index.sync([1, 2, 3, 4, 9, 2, 3, 5, 6, 1, 2, 3])
    assert _draft(index, 3) == [4, 9, 2]  # the 3-gram [1, 2, 3] beats the 2-gram [2, 3]


def test_one_token_near_the_place_finds_the_text_again() -> None:
    index = ngrams.NgramIndex()
    # The answer copied 1 2 3, wrote 99 for 4, then 6: the 2-gram (99, 6) occurs nowhere.
    index.sync(PROMPT + [1, 2, 3, 99, 6])
    assert index.find() is None  # without a place, one token is not enough
    assert index.find(near=5) == 6  # near where 6 stood, 6 occurs once: 7 follows it
    assert _draft(index, 3, near=5) == [7, 8, 9]
    # Far from the place, the same token is not taken.
    assert index.find(near=6 + ngrams.NEAR_AHEAD + 8) is None


def test_a_token_that_occurs_twice_near_the_place_is_not_enough() -> None:
    index = ngrams.NgramIndex()
    start = [1, 7, 2, 7, 3, 4] + PAD
    index.sync(start + [1, 99, 7])
    assert index.find(near=2) is None  # 7 is followed by 2 and by 3 there: no telling
    index.sync(start + [1, 99, 7, 3])
    assert index.find(near=4) == 5  # (7, 3) occurs once: 4 follows


def test_the_occurrence_near_the_place_beats_the_latest() -> None:
    index = ngrams.NgramIndex()
    index.sync(PROMPT + [9, 4, 5])
    # (4, 5) occurs in the source (continued by 6) and later in OTHER (continued by 41).
    assert index.find() == len(SOURCE) + len(PAD) + 3  # no place: the latest, 41
    assert index.find(near=5) == 5  # copying the source: 6


def test_a_sequence_keeps_its_place_across_a_changed_word() -> None:
    spec = speculative.Speculation(3, forced=True)
    tokens = PROMPT + [1, 2]
    assert spec.propose(tokens, 100) == [3, 4, 5]
    spec.settle(1)  # 3 kept, 4 rejected: the model wrote 99 instead
    tokens += [3, 99]
    assert spec.propose(tokens, 100) == []  # 99 is nowhere: nothing to draft
    tokens += [5]  # the answer goes on as the source does
    assert spec.propose(tokens, 100) == [6, 7, 8]  # the place (after 4) says where


def test_a_wholly_rejected_draft_does_not_move_the_place() -> None:
    spec = speculative.Speculation(3, forced=True)
    tokens = PROMPT + [1, 2]
    assert spec.propose(tokens, 100) == [3, 4, 5]
    spec.settle(3)  # all kept: the place is the source
    tokens += [3, 4, 5, 41]  # the model wrote 41 where the source has 6
    assert spec.propose(tokens, 100) == [42, 50, 1]  # (4, 5, 41) is OTHER's
    spec.settle(0)  # the model wrote 7: back to the source
    spec._cooldown = 0  # (the pause after a miss is not this test's)
    tokens += [7]
    # One token near the place the kept tokens put: had the rejected draft moved the place to
    # OTHER, nothing near there would follow 7.
    assert spec.propose(tokens, 100) == [8, 9, 20]
