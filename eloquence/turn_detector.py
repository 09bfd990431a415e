"""End-of-turn from the words said so far: a sentence that stops on "with" or "my" is not finished.

The agent's VAD ends speech after a short silence; this detector then looks at the user's
transcript (already final: the whisper-stt stream is flushed at end of speech) and says how
likely the turn is over. A likely end commits after the short `min_delay`; an unfinished sentence
waits up to `max_delay` for the rest. It runs in microseconds, offline, in English and French.

Why not only the bundled audio end-of-turn model: on our fixtures it scored a mid-sentence
pause and a finished question alike (0.47 vs 0.46), so it could not shorten the delay safely.
"""

from __future__ import annotations

import re

from livekit.agents import llm
from livekit.agents.language import LanguageCode

# Words a sentence does not end on: articles, possessives, prepositions, conjunctions,
# subject pronouns, auxiliaries, fillers and the adverbs that lead into a verb ("I usually ...").
# A transcript ending on one is mid-sentence.
_DANGLING_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """a an the my your his her our their its this these those to of in on at for with about
        from into onto by as and or but so because if when while that than then whether i i'm i'd i'll
        i've we he she they it's is are am was were be been being have has had do does did
        can could would should will shall might must may very really quite more most some any
        every what how which who whom whose where why um uh er like usually always sometimes just also
        even""".split()
    ),
    "fr": frozenset(
        """le la les l' un une des du de d' mon ma mes ton ta tes son sa ses notre nos votre vos leur
        leurs ce cet cette ces à au aux en dans sur sous pour par avec sans chez vers et ou mais
        donc car parce que qu' si quand comme lorsque je j' tu il elle on nous vous ils elles est
        suis es sont ai as a ont être avoir très plus moins euh ben bah""".split()
    ),
}
# Dangling words a question does end on ("How long should it be?", "What can I do about that?"):
# before a "?" they close the turn. Prepositions are not among them: Whisper writes "help me with?"
# for the first half of a sentence cut by a pause.
_QUESTION_ENDINGS: dict[str, frozenset[str]] = {
    "en": frozenset(
        """be is are am was were been do does did have has had can could would should will i we he
        she they that this these those""".split()
    ),
    "fr": frozenset("est suis es sont ai as a ont être je tu il elle on nous vous ils elles".split()),
}
# Whisper closes a fragment cut by a pause after a preposition with a pronoun it never heard:
# "Can you help me prepare for" -> "... prepare for it?". Measured: every false endpoint of the
# bench's paused sentences (issue 11). A real "... about it?" waits the longer delay.
_HALLUCINATED_TAILS: dict[str, frozenset[str]] = {
    "en": frozenset("to for with about on at in of from into".split()),
}
_TRAILING_INCOMPLETE = ("...", "…", ",", ";", ":", "-", "–")
_TERMINAL = (".", "?", "!")
_WORD = re.compile(r"[\w'’]+", re.UNICODE)


def _after_elision(word: str) -> str:
    """The word an elision leads to: "qu'il" -> "il", "j'ai" -> "ai"; "d'introduction" -> "introduction"
    (not "d'": the sentence ended on a noun). A bare elision ("l'") stays as it is."""
    head, _, tail = word.rpartition("'")
    return tail if head and tail else word


def end_of_turn_probability(text: str, language: str = "en") -> float:
    """How likely `text` (the user's words so far) is a finished turn."""
    text = text.strip()
    if not text:
        return 1.0
    if text.endswith(_TRAILING_INCOMPLETE):
        return 0.05
    words = _WORD.findall(text.lower().replace("’", "'"))
    # a language without a list is judged on punctuation alone: another language's words would mislead
    dangling = _DANGLING_WORDS.get(language.split("-")[0].lower(), frozenset())
    tails = _HALLUCINATED_TAILS.get(language.split("-")[0].lower(), frozenset())
    if len(words) >= 2 and words[-1] == "it" and words[-2] in tails:
        return 0.05
    if words and (words[-1] in dangling or _after_elision(words[-1]) in dangling):
        asked = _QUESTION_ENDINGS.get(language.split("-")[0].lower(), frozenset())
        if text.endswith("?") and words[-1] in asked:
            return 0.95
        return 0.05
    return 0.95 if text.endswith(_TERMINAL) else 0.6


class TranscriptTurnDetector:
    """A livekit-agents turn detector (the `_TurnDetector` protocol) over the user's transcript.

    `language` is the session's (eloquence/agent.py `default_turn_handling(settings, language=...)`):
    a French session judges "avec" as dangling, an English one "with"."""

    def __init__(self, *, language: str = "en", unlikely_threshold: float = 0.3) -> None:
        self._language = language
        self._unlikely_threshold = unlikely_threshold

    @property
    def language(self) -> str:
        """The word lists in use: the session's, or the language the STT reported."""
        return self._language

    @property
    def model(self) -> str:
        return "transcript-dangling-words"

    @property
    def provider(self) -> str:
        return "eloquence"

    async def unlikely_threshold(self, language: LanguageCode | None) -> float | None:
        return self._unlikely_threshold

    async def supports_language(self, language: LanguageCode | None) -> bool:
        if language:  # the STT's language, when it reports one, wins over the session's
            self._language = str(language)
        return True

    async def predict_end_of_turn(self, chat_ctx: llm.ChatContext, *, timeout: float | None = None) -> float:
        for item in reversed(chat_ctx.items):
            if item.type == "message" and item.role == "user":
                return end_of_turn_probability(item.text_content or "", self._language)
        return 1.0
