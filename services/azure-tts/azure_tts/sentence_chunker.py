"""Text to speakable chunks: sentences, long ones split at clause boundaries, about 100 characters.

pysbd finds sentence ends (it knows "Dr.", "a.m.", "U.S.", "3.5", ellipses, quotes); a small
French/English abbreviation list patches the titles it misses ("Mme.", "Pr.", "p. ex.").
A chunk boundary is only ever a whitespace, and never one inside a number ("1 234"), after a
title ("M. Dupont") or before French spaced punctuation ("pas ?").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pysbd

# Titles and abbreviations that never end a sentence, lower case, without their dot.
ABBREVIATIONS = frozenset(
    {
        "m", "mm", "mme", "mmes", "mlle", "mlles", "me", "pr", "dr", "drs", "st", "ste", "mr", "mrs", "ms",
        "prof", "jr", "sr", "vs", "cf", "ex", "p", "env", "vol", "fig", "chap", "av", "bd", "gén", "col",
        "cdt", "lt", "sgt", "capt", "gov", "sen", "rep", "rev", "hon", "mgr", "gen",
    }
)  # fmt: skip
_LAST_TOKEN = re.compile(r"(?:^|\s)[(\[«\"']*([^\s.]+)\.$")
_WHITESPACE = re.compile(r"\s+")
_CLAUSE_END = re.compile(r"[,;:)\]»—–]$|\s[-—–]$")
_NO_BREAK_BEFORE = re.compile(r"^[?!:;»)\]%€$]")
_NO_BREAK_AFTER = re.compile(r"[«(\[]$")
_SENTENCE_PUNCTUATION = re.compile(r"[.!?…;:\n]")


@dataclass(frozen=True)
class _Break:
    at: int
    """Index of the first whitespace character of the gap."""
    end: int
    """Index after the gap."""
    clause: bool


class SentenceChunker:
    """Splits text into chunks; `split` for a whole text, `push`/`flush` for text that streams in."""

    def __init__(self, *, language: str | None = "en", max_chars: int = 100) -> None:
        # pysbd's French rules split after "Dr." and "U.S."; its English rules suit French text
        # better once the title list above is applied, so English rules serve both languages.
        del language
        self._segmenter = pysbd.Segmenter(language="en", clean=False)
        self._max_chars = max_chars
        self._buffer = ""

    def split(self, text: str) -> list[str]:
        chunks: list[str] = []
        for start, end in self._sentences(text):
            chunks.extend(self._split_long(text[start:end]))
        return chunks

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the chunks that are now complete (the tail stays buffered)."""
        self._buffer += text
        if len(self._buffer) <= self._max_chars and not _SENTENCE_PUNCTUATION.search(self._buffer):
            return []
        spans = self._sentences(self._buffer)
        if not spans:
            return []
        chunks = [c for start, end in spans[:-1] for c in self._split_long(self._buffer[start:end])]
        tail_start = spans[-1][0]
        tail = self._buffer[tail_start:]
        if len(tail.strip()) > self._max_chars:
            pieces = self._split_long(tail)
            chunks.extend(pieces[:-1])
            tail = tail[tail.rfind(pieces[-1]) :] if len(pieces) > 1 else tail
        self._buffer = tail
        return chunks

    def flush(self) -> list[str]:
        """End of the text: everything still buffered, chunked."""
        text, self._buffer = self._buffer, ""
        return self.split(text)

    @property
    def pending(self) -> str:
        return self._buffer

    # --- sentences -----------------------------------------------------------------------

    def _sentences(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each sentence in `text`, stripped, with abbreviation ends merged."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for segment in self._segmenter.segment(text):
            stripped = segment.strip()
            if not stripped:
                continue
            start = text.find(stripped, pos)
            if start < 0:  # pysbd altered the text: fall back to one sentence for the rest
                rest = text[pos:].strip()
                if rest:
                    start = text.find(rest, pos)
                    spans.append((start, start + len(rest)))
                return spans
            end = start + len(stripped)
            if spans and _ends_with_abbreviation(text[spans[-1][0] : spans[-1][1]]):
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
            pos = end
        return spans

    # --- long sentences ------------------------------------------------------------------

    def _split_long(self, sentence: str) -> list[str]:
        sentence = sentence.strip()
        if len(sentence) <= self._max_chars:
            return [sentence] if sentence else []
        breaks = _breaks(sentence)
        chunks: list[str] = []
        start = 0
        while len(sentence) - start > self._max_chars:
            fitting = [b for b in breaks if b.at > start and b.at - start <= self._max_chars]
            clause = [b for b in fitting if b.clause and b.at - start >= self._max_chars // 3]
            if clause:
                cut = clause[-1]
            elif fitting:
                cut = fitting[-1]
            else:  # one very long word (a URL): never cut inside it, take the next gap
                later = [b for b in breaks if b.at > start]
                if not later:
                    break
                cut = later[0]
            chunks.append(sentence[start : cut.at])
            start = cut.end
        chunks.append(sentence[start:])
        return [c for c in chunks if c]


def _ends_with_abbreviation(sentence: str) -> bool:
    match = _LAST_TOKEN.search(sentence)
    if match is None:
        return False
    token = match.group(1)
    # "J." or "M." is an initial or a title; a lone digit ("chapter 3.") ends a sentence.
    return token.lower() in ABBREVIATIONS or (len(token) == 1 and token.isupper())


def _breaks(sentence: str) -> list[_Break]:
    """Whitespace gaps where a chunk may end, marked when they follow a clause."""
    result: list[_Break] = []
    for gap in _WHITESPACE.finditer(sentence):
        before, after = sentence[: gap.start()], sentence[gap.end() :]
        if not before or not after:
            continue
        if before[-1].isdigit() and after[0].isdigit():
            continue  # "1 234", "10 000"
        if _NO_BREAK_BEFORE.match(after) or _NO_BREAK_AFTER.search(before):
            continue
        if before.endswith(".") and _ends_with_abbreviation(before):
            continue
        result.append(_Break(at=gap.start(), end=gap.end(), clause=bool(_CLAUSE_END.search(before))))
    return result
