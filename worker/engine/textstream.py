"""Incremental detokenization with stop strings: never splits a UTF-8 character or a stop."""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        self.stopped_by = ""  # the stop string that ended the text

    def push(self, piece: bytes) -> str:
        """Feeds one token's bytes; returns the text that is now safe to emit."""
        text = self._held + self._decoder.decode(piece)
        if not self._stops:
            self._held = ""
            return text
        cut = -1
        for stop in self._stops:
            i = text.find(stop)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
                self.stopped_by = stop
        if cut != -1:
            self.stopped = True
            self._held = ""
            return text[:cut]
        hold = self._partial_stop_suffix(text)
        self._held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold]

    def flush(self) -> str:
        """Text still held back when generation ends without a stop."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_stop_suffix(self, text: str) -> int:
        # Longest suffix of text that is a proper prefix of some stop string.
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:k]):
                    best = k
                    break
        return best
