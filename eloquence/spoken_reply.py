"""A streamed LLM reply shaped for speech: a short first clause, whole sentences, a bounded length.

`SpokenReply` sits between the LLM and the TTS (the agent's `llm_node`):
- **First audio sooner.** The first clause (up to the first `,` `;` `:` or sentence end) streams
  as it comes and is followed by a `FlushSentinel`: the framework synthesizes it as a segment of
  its own, so the TTS starts on a few words instead of a whole sentence. The rest is synthesized
  while that clause plays.
- **Whole sentences.** After the first clause, text is released one complete sentence at a time.
  A reply cut by the token budget (`max_tokens`) drops its unfinished sentence: it ends at a
  sentence boundary, never mid-word.
- **Bounded.** The reply ends after `max_sentences` sentences (two; five when the user asks for
  detail), or at its first repeated sentence (small models loop). Ending it closes the LLM
  stream, which stops the generation and frees the CPU for the audio.

Tool calls, usage chunks and `FlushSentinel`s pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from livekit.agents import llm
from livekit.agents.types import FlushSentinel

# a sentence ends on . ! ? … (and closing quotes or brackets) followed by whitespace
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”»)\]]*\s")
_CLAUSE_END = re.compile(r"[.!?…,;:]+[\"'”»)\]]*\s")
_ENDS_SENTENCE = re.compile(r"[.!?…]+[\"'”»)\]]*\s*$")
_WORD = re.compile(r"\w+", re.UNICODE)
_WORD_THEN_SPACE = re.compile(r"[^\s]+\s+")
# "1." after a line break, a colon or a sentence end numbers a list item; it ends no sentence
_LIST_MARKER = re.compile(r"(?:^|[:\n]|[.!?]\s)\s*\d{1,2}$")
_ASKS_FOR_MORE = re.compile(
    r"\b(in detail|more detail|details|tell me more|explain|step by step|longer|examples?"
    r"|en détail|plus de détails|dis-m'en plus|explique|étape par étape|exemples?)\b",
    re.IGNORECASE,
)

DEFAULT_MAX_SENTENCES = 2
MORE_SENTENCES = 5


@dataclass(frozen=True)
class SpokenReplyOptions:
    max_tokens: int | None = None
    """The LLM's token budget: a reply that used all of it was cut, and loses its last,
    unfinished sentence. None: never treated as cut."""
    max_sentences: int | None = DEFAULT_MAX_SENTENCES
    """Sentences in a reply (None: no limit)."""
    more_sentences: int | None = MORE_SENTENCES
    """The limit when the user asks for detail ("explain", "step by step", "en détail"...)."""
    first_clause_words: int = 1
    """Words the first clause needs before a `,` `;` `:` may end it (a sentence end always does).
    One ("Sure, ...") measured best: e2e p50 610 ms against 858 with two and 913 with the whole
    first sentence (issue 11), with a gap before the second segment of 0.3 s at most."""
    first_clause_max_words: int | None = 5
    """A first clause without punctuation ends after this many words (at a word boundary): a long
    first sentence is not synthesized whole before the first audio (Piper: ~40 ms for one word,
    ~100 for five, ~160 for eight). None: no limit. A/B over 25 tuning questions, paired: 5 words
    e2e p50/p95 549/789 ms against 586/1060 with 8 and 570/779 with 3, no gap before the next
    segment in any arm (issue 11)."""


def asks_for_more(user_text: str) -> bool:
    """Whether the user asked for a longer answer."""
    return bool(_ASKS_FOR_MORE.search(user_text))


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    """Whether a `_SENTENCE_END`/`_CLAUSE_END` match in `text` really ends something: "Try these: 1."
    does not (a list item's number)."""
    return not (m.group().startswith(".") and _LIST_MARKER.search(text, 0, m.start()))


def _sentence_ends(text: str, pattern: re.Pattern[str] = _SENTENCE_END) -> list[re.Match[str]]:
    return [m for m in pattern.finditer(text) if _ends_sentence(text, m)]


def _normalized(sentence: str) -> str:
    return " ".join(_WORD.findall(sentence.lower()))


class SpokenReply:
    """The shaping state of one reply: `push` text as it streams, `end` once the LLM is done.

    Both return the pieces to speak, in order: text, and a `FlushSentinel` after the first clause.
    """

    def __init__(self, options: SpokenReplyOptions, *, max_sentences: int | None = None) -> None:
        self._opts = options
        self._max_sentences = max_sentences if max_sentences is not None else options.max_sentences
        self._first_clause = True
        self._said_first = ""  # the first clause's text released so far
        self._pending = ""  # received, not yet released
        self._sentence_start = ""  # released part of the sentence in progress
        self._sentences: list[str] = []  # the reply's complete sentences, normalized
        self.done = False
        """True once the reply is complete (sentence limit or repeated sentence): stop the LLM."""
        self.stopped_on: str | None = None
        """Why the reply ended early: `sentences` or `repeat`."""

    def push(self, text: str) -> list[str | FlushSentinel]:
        if self.done or not text:
            return []
        self._pending += text
        if not self._first_clause:
            return self._release_sentences()
        end = self._first_clause_end(self._said_first + self._pending)
        if end is None:
            # streams on up to the last whole word: the TTS waits for the clause anyway
            cut = max(self._pending.rfind(" "), self._pending.rfind("\n")) + 1
            out: list[str | FlushSentinel] = [self._pending[:cut]] if cut else []
            self._said_first += self._pending[:cut]
            self._pending = self._pending[cut:]
            return out
        k = end - len(self._said_first)
        clause, self._pending = self._pending[:k], self._pending[k:]
        self._said_first += clause
        self._first_clause = False
        out = [clause, FlushSentinel()]
        start = 0
        for m in _sentence_ends(self._said_first):
            self._sentences.append(_normalized(self._said_first[start : m.end()]))
            start = m.end()
        self._sentence_start = self._said_first[start:]
        if self._max_sentences is not None and len(self._sentences) >= self._max_sentences:
            self._stop("sentences")
            return out
        return out + self._release_sentences()

    def end(self, *, cut: bool) -> list[str | FlushSentinel]:
        """The LLM finished; `cut`: by its token budget (the last sentence is unfinished)."""
        if self.done:
            return []
        self.done = True
        tail, self._pending = self._pending, ""
        if not tail.strip():
            return []
        whole = self._sentence_start + tail
        last_end = _ENDS_SENTENCE.search(whole)
        if not cut or (last_end is not None and _ends_sentence(whole, last_end)):
            return [] if self._is_repeat(whole) else [tail]
        if self._first_clause or self._sentences:
            return []  # a word fragment, or an unfinished sentence after whole ones: dropped
        # only the first clause of an unfinished first sentence was said: end on its last clause
        clause_ends = [m.end() for m in _sentence_ends(tail, _CLAUSE_END)]
        return [tail[: clause_ends[-1]]] if clause_ends else []

    # --------------------------------------------------------------------------------------

    def _first_clause_end(self, text: str) -> int | None:
        candidates: list[int] = []
        for m in _sentence_ends(text, _CLAUSE_END):
            words = len(_WORD.findall(text[: m.start()]))
            is_sentence = _SENTENCE_END.fullmatch(m.group()) is not None
            if words >= 1 and (is_sentence or words >= self._opts.first_clause_words):
                candidates.append(m.end())
                break
        limit = self._opts.first_clause_max_words
        if limit is not None:
            # the end of the limit-th word, once the whitespace after it has come
            ends = [m.end() for m in _WORD_THEN_SPACE.finditer(text)]
            if len(ends) >= limit:
                candidates.append(ends[limit - 1])
        return min(candidates, default=None)

    def _release_sentences(self) -> list[str | FlushSentinel]:
        out: list[str | FlushSentinel] = []
        while not self.done:
            # a list marker's "1." may follow text already released: judge it with that text
            offset = len(self._sentence_start)
            ends = _sentence_ends(self._sentence_start + self._pending)
            ends = [m for m in ends if m.start() >= offset]
            if not ends:
                break
            k = ends[0].end() - offset
            sentence, rest = self._pending[:k], self._pending[k:]
            whole = self._sentence_start + sentence
            if self._is_repeat(whole):
                self._stop("repeat")
                break
            out.append(sentence)
            self._pending, self._sentence_start = rest, ""
            self._sentences.append(_normalized(whole))
            if self._max_sentences is not None and len(self._sentences) >= self._max_sentences:
                self._stop("sentences")
        return out

    def _is_repeat(self, sentence: str) -> bool:
        norm = _normalized(sentence)
        return bool(norm) and norm in self._sentences

    def _stop(self, why: str) -> None:
        self.done = True
        self.stopped_on = why
        self._pending = ""


async def shape_for_speech(
    chunks: AsyncIterable[llm.ChatChunk | str | FlushSentinel],
    options: SpokenReplyOptions,
    *,
    user_text: str = "",
) -> AsyncIterator[llm.ChatChunk | str | FlushSentinel]:
    """An `llm_node`'s output shaped by `SpokenReply`; returns early (closing the LLM) when done."""
    limit = options.more_sentences if asks_for_more(user_text) else options.max_sentences
    reply = SpokenReply(options, max_sentences=limit)
    cut = False
    async for chunk in chunks:
        if isinstance(chunk, FlushSentinel):
            for piece in reply.end(cut=False):
                yield piece
            yield chunk
            reply = SpokenReply(options, max_sentences=limit)
            continue
        text = chunk if isinstance(chunk, str) else (chunk.delta.content if chunk.delta else None)
        if isinstance(chunk, llm.ChatChunk):
            if chunk.usage is not None and options.max_tokens is not None:
                cut = chunk.usage.completion_tokens >= options.max_tokens
            if chunk.delta is not None and (chunk.delta.tool_calls or chunk.delta.extra):
                yield chunk.model_copy(update={"delta": chunk.delta.model_copy(update={"content": None})})
            elif chunk.usage is not None:
                yield llm.ChatChunk(id=chunk.id, usage=chunk.usage)
        if text:
            for piece in reply.push(text):
                yield piece
            if reply.done:
                return
    for piece in reply.end(cut=cut):
        yield piece
