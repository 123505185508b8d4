"""Partial text of a turn still being spoken, as ``delta`` events.

The turn's audio so far is decoded again every ``live_partial_s``; a word is
sent once two decodes in a row agree on it and on everything before it (the
last word of a decode may be cut mid-word, so it waits). Deltas only ever
add: when the turn is committed, its final text's delta is what it adds to
the words sent, and a final text that disagrees with them adds nothing — the
``completed`` event carries the text as decoded. Pure: no I/O."""

from __future__ import annotations


class PartialText:
    def __init__(self) -> None:
        self._last: list[str] = []
        self.sent: list[str] = []

    def _delta(self, words: list[str]) -> str | None:
        if len(words) <= len(self.sent) or words[: len(self.sent)] != self.sent:
            return None
        new = words[len(self.sent) :]
        lead = " " if self.sent else ""
        self.sent = list(words)
        return lead + " ".join(new)

    def interim(self, text: str) -> str | None:
        """The delta a new decode of the turn so far allows, if any."""
        words = text.split()
        agreed = 0
        for a, b in zip(self._last, words, strict=False):
            if a != b:
                break
            agreed += 1
        self._last = words
        return self._delta(words[: min(agreed, len(words) - 1)])

    def final(self, text: str) -> str | None:
        """The delta the committed turn's text adds to what was sent."""
        return self._delta(text.split())
