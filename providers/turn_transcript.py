"""A turn's whole transcript: what the STT heard again as one piece after a pause had split it.

The whisper-stt sidecar, asked for `context=turn`, transcribes an utterance that follows a short pause
together with the one before it; its final carries the whole turn's text (`turn_transcript`) beside what
the framework had already been given (`heard`). These helpers give the framework only the new words,
and the user's message the whole sentence.
"""

from __future__ import annotations

import re
from collections import deque

from livekit.agents import stt

_WORD_CHARS = re.compile(r"[^\w']+", re.UNICODE)


def _word_key(word: str) -> str:
    return _WORD_CHARS.sub("", word.casefold().replace("’", "'"))


def unheard_tail(heard: str, whole: str) -> str:
    """The words of `whole` past those `heard` already gave: the end of its cheapest word alignment.

    `heard` is what the framework has (the turn's earlier finals); `whole` the turn transcribed again
    as one piece. Case and punctuation do not count; on a tie the longer match wins, so no word is
    said twice.
    """
    said = [_word_key(w) for w in heard.split()]
    tokens = whole.split()
    words = [_word_key(w) for w in tokens]
    # row[j]: edit distance between `said` and words[:j]
    row = list(range(len(words) + 1))
    for i, s in enumerate(said, 1):
        previous, row = row, [i] + [0] * len(words)
        for j, w in enumerate(words, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (s != w))
    cut = min(range(len(words) + 1), key=lambda j: (row[j], -j))
    return " ".join(tokens[cut:])


class TurnRevisions:
    """The whole-turn transcripts of a session's STT events, for the user's message at the end of the turn.

    Feed it every event the session's STT emits (`observe`, e.g. from `Agent.stt_node`); then
    `revise(text)` gives the turn's text with the part a pause had split replaced by the transcript
    of the whole turn. Any STT works: events without `turn_transcript` metadata change nothing.
    """

    def __init__(self, *, keep: int = 8) -> None:
        self._revisions: deque[tuple[str, str]] = deque(maxlen=keep)

    def observe(self, event: stt.SpeechEvent) -> None:
        if event.type != stt.SpeechEventType.FINAL_TRANSCRIPT or not event.alternatives:
            return
        meta = event.alternatives[0].metadata or {}
        heard, whole = meta.get("heard"), meta.get("turn_transcript")
        if isinstance(heard, str) and isinstance(whole, str) and heard and heard != whole:
            self._revisions.append((heard, whole))

    def revise(self, text: str) -> str:
        """`text` (the turn as the framework put it together) with its split tail said as one piece."""
        for i in range(len(self._revisions) - 1, -1, -1):
            heard, whole = self._revisions[i]
            if text == heard or text.endswith(" " + heard):
                del self._revisions[i]
                return f"{text[: len(text) - len(heard)]}{whole}"
        return text
