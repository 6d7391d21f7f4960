"""Prompt lookup's index: the n-grams of a sequence's tokens and where each was continued.

It starts from llama.cpp's `ngram-simple` (common/speculative.cpp): the longest n-gram (here 4
down to 2 tokens) ending the context, its latest earlier occurrence, the tokens after it. A
sequence that has drafted also keeps its place in the text it is copying (speculative.py): the
next draft then comes from the occurrence nearest to where that text goes on, and near there
one token is enough to find it again after the answer changed a word (a rewrite, a code edit).
"""

from __future__ import annotations

import bisect

NGRAM_MAX = 4
NGRAM_MIN = 2  # where a sequence has no place in the text yet: shorter n-grams mislead
# Where a sequence copies a text, an occurrence this near its place in it (tokens before,
# tokens after) is taken before any other, and one token is enough there.
NEAR_BEHIND = 4
NEAR_AHEAD = 16


class NgramIndex:
    """The n-grams of a token history, each mapped to where its continuations start."""

    def __init__(self) -> None:
        self.history: list[int] = []
        # n -> n-gram -> the positions of the tokens that followed it, in ascending order
        self._maps: list[dict[tuple[int, ...], list[int]]] = [{} for _ in range(NGRAM_MAX + 1)]

    def sync(self, tokens: list[int]) -> None:
        """Indexes what `tokens` (which only grows at its end) gained since the last call."""
        history = self.history
        for i in range(len(history), len(tokens)):
            history.append(tokens[i])
            # The n-gram ending just before token i is continued by token i.
            for n in range(1, min(NGRAM_MAX, i) + 1):
                self._maps[n].setdefault(tuple(history[i - n:i]), []).append(i)

    def find(self, near: int | None = None) -> int | None:
        """Where the continuation of an earlier occurrence of the n-gram ending the history
        starts (the one ending it is not indexed yet: nothing follows it), or None.

        With `near` (where the text a sequence copies goes on), the longest n-gram, down to one
        token, with an occurrence near there wins, the nearest of its occurrences; failing
        that, or without `near`, the longest of at least NGRAM_MIN tokens, its latest
        occurrence (the latest did better than the nearest on bench/speculative.py's texts)."""
        history = self.history
        longest = min(NGRAM_MAX, len(history))
        found: list[list[int]] = []
        for n in range(longest, 0, -1):
            starts = self._maps[n].get(tuple(history[len(history) - n:]))
            found.append(starts or [])
            if starts and near is not None:
                close = _between(starts, near - NEAR_BEHIND, near + NEAR_AHEAD)
                # One token that occurs more than once near there (a newline and indent in
                # code, " the") says nothing about where the text goes on.
                if close and (n > 1 or len(close) == 1):
                    return min(close, key=lambda start: abs(start - near))
        for n, starts in zip(range(longest, 0, -1), found):
            if starts and n >= NGRAM_MIN:
                return starts[-1]
        return None


def _between(starts: list[int], lo: int, hi: int) -> list[int]:
    """The elements of the ascending `starts` from lo to hi."""
    return starts[bisect.bisect_left(starts, lo):bisect.bisect_right(starts, hi)]
