"""Replies shaped for speech: a first clause of its own, whole sentences, a bounded length."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from livekit.agents import llm
from livekit.agents.types import FlushSentinel

from eloquence.spoken_reply import SpokenReply, SpokenReplyOptions, asks_for_more, shape_for_speech

FLUSH = "|"


def _tokens(text: str) -> list[str]:
    """Roughly how a tokenizer streams text: words with their leading space, punctuation apart."""
    return re.findall(r"\s?\w+|\s?[^\w\s]|\s", text)


def _shape(text: str, *, cut: bool = False, **options: object) -> list[str]:
    reply = SpokenReply(SpokenReplyOptions(**options))  # type: ignore[arg-type]
    out: list[str | FlushSentinel] = []
    for token in _tokens(text):
        out += reply.push(token)
        if reply.done:
            break
    out += reply.end(cut=cut)
    return [FLUSH if isinstance(piece, FlushSentinel) else piece for piece in out]


def _spoken(pieces: list[str]) -> str:
    return "".join(p for p in pieces if p != FLUSH)


def test_the_first_clause_is_flushed_on_its_own() -> None:
    pieces = _shape("Sure thing, start with one slow breath. Then smile.")
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "Sure thing, "
    assert pieces.count(FLUSH) == 1
    assert _spoken(pieces) == "Sure thing, start with one slow breath. Then smile."


def test_a_one_word_clause_is_enough_by_default() -> None:
    pieces = _shape("Absolutely, I can help. Breathe first.")
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "Absolutely, "


def test_a_long_first_clause_without_punctuation_ends_after_max_words() -> None:
    pieces = _shape("One simple way to improve your focus during a talk is to breathe slowly.")
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "One simple way to improve "
    assert _spoken(pieces) == "One simple way to improve your focus during a talk is to breathe slowly."
    # the cap holds when the text comes in one piece with a comma further on
    reply = SpokenReply(SpokenReplyOptions())
    first = reply.push("One simple way to improve your focus, then breathe. ")
    assert first[0] == "One simple way to improve " and isinstance(first[1], FlushSentinel)
    pieces = _shape("One simple way to improve your focus during a talk. Then", first_clause_max_words=None)
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "One simple way to improve your focus during a talk. "


def test_a_longer_minimum_clause_waits_for_more_words() -> None:
    pieces = _shape("Absolutely, I can help. Breathe first.", first_clause_words=2)
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "Absolutely, I can help. "


def test_a_short_first_sentence_is_the_first_chunk() -> None:
    pieces = _shape("Great question. Pause before you answer.")
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "Great question. "


def test_after_the_first_clause_text_is_released_a_whole_sentence_at_a_time() -> None:
    reply = SpokenReply(SpokenReplyOptions())
    released: list[str] = []
    for token in _tokens("Yes, you can. Try it slowly and"):
        released += [p for p in reply.push(token) if isinstance(p, str)]
    assert "".join(released) == "Yes, you can. "


def test_a_reply_cut_by_the_budget_ends_on_its_last_whole_sentence() -> None:
    pieces = _shape("Yes, you can. Slow down a little. Then take a deep bre", cut=True)
    assert _spoken(pieces) == "Yes, you can. Slow down a little. "


def test_a_cut_inside_the_first_sentence_ends_on_a_clause_never_mid_word() -> None:
    pieces = _shape("Sure thing, take your time with the open", cut=True)
    assert _spoken(pieces) == "Sure thing, "
    pieces = _shape("One simple way to calm down is to pract", cut=True)
    assert not _spoken(pieces).endswith("pract")
    assert _spoken(pieces).endswith(" ")


def test_an_uncut_reply_keeps_its_last_words_without_punctuation() -> None:
    assert _spoken(_shape("Sure thing, let us try that together")) == "Sure thing, let us try that together"


def test_a_complete_last_sentence_is_kept_even_when_the_budget_is_spent() -> None:
    assert _spoken(_shape("Yes, you can. Slow down.", cut=True)) == "Yes, you can. Slow down."


def test_the_reply_stops_after_max_sentences() -> None:
    reply = SpokenReply(SpokenReplyOptions(max_sentences=2))
    out: list[str | FlushSentinel] = []
    for token in _tokens("One thing. Two things. Three things. Four things."):
        out += reply.push(token)
        if reply.done:
            break
    assert reply.done and reply.stopped_on == "sentences"
    assert "".join(p for p in out if isinstance(p, str)) == "One thing. Two things. "


def test_a_list_item_number_ends_no_sentence() -> None:
    """ "Try these: 1." is not a sentence: the reply never ends on a bare list number."""
    pieces = _shape("Sure. Try these tips: 1. Breathe slowly. 2. Smile at the room.")
    assert _spoken(pieces) == "Sure. Try these tips: 1. Breathe slowly. "
    pieces = _shape("Sure, here is how.\n1. Breathe slowly.\n2. Smile. 3. Pause.")
    assert _spoken(pieces) == "Sure, here is how.\n1. Breathe slowly.\n"
    # a number that ends a sentence still ends it
    assert (
        _spoken(_shape("Sure, count to 10. Then breathe. Then smile.")) == "Sure, count to 10. Then breathe. "
    )


def test_a_reply_cut_after_a_list_number_drops_the_number() -> None:
    pieces = _shape("Sure, breathe slowly. Then try these: 1.", cut=True)
    assert _spoken(pieces) == "Sure, breathe slowly. "
    pieces = _shape("1. Breathe in slowly, then out.", max_sentences=None)
    assert _spoken(pieces[: pieces.index(FLUSH)]) == "1. Breathe in slowly, "


def test_the_reply_stops_at_its_first_repeated_sentence() -> None:
    pieces = _shape(
        "Okay, practice your opening. Practice it twice. Practice it twice. Go.", max_sentences=None
    )
    assert _spoken(pieces) == "Okay, practice your opening. Practice it twice. "
    pieces = _shape("Breathe in. Smile, then start. Breathe in. Go on.", max_sentences=None)
    assert _spoken(pieces) == "Breathe in. Smile, then start. "


def test_asking_for_detail_allows_a_longer_reply() -> None:
    assert asks_for_more("Can you explain that step by step?")
    assert asks_for_more("Peux-tu m'expliquer en détail ?")
    assert not asks_for_more("How do I sound more confident?")


async def _stream(*items: object) -> AsyncIterator[object]:
    for item in items:
        yield item


async def test_shape_for_speech_passes_usage_and_detects_the_budget_cut() -> None:
    usage = llm.CompletionUsage(completion_tokens=8, prompt_tokens=20, total_tokens=28)
    chunks = [
        llm.ChatChunk(id="c", delta=llm.ChoiceDelta(role="assistant", content=t))
        for t in _tokens("Yes, do it. Then rest and")
    ]
    out = [
        piece
        async for piece in shape_for_speech(
            _stream(*chunks, llm.ChatChunk(id="c", usage=usage)),  # type: ignore[arg-type]
            SpokenReplyOptions(max_tokens=8),
        )
    ]
    text = "".join(p for p in out if isinstance(p, str))
    assert text == "Yes, do it. "
    assert any(isinstance(p, llm.ChatChunk) and p.usage == usage for p in out)
    assert sum(isinstance(p, FlushSentinel) for p in out) == 1


async def test_shape_for_speech_closes_the_llm_once_the_reply_is_complete() -> None:
    pulled: list[str] = []

    async def endless() -> AsyncIterator[str]:
        while True:
            for token in _tokens("Again and again. "):
                pulled.append(token)
                yield token

    text = "".join([p async for p in shape_for_speech(endless(), SpokenReplyOptions()) if isinstance(p, str)])
    assert text == "Again and again. "
    assert len(pulled) < 20


@pytest.mark.parametrize("flush_first", [True, False])
async def test_a_flush_from_upstream_starts_a_new_reply(flush_first: bool) -> None:
    # the rate limiter's "One moment, please." comes as its own flushed segment
    items: list[object] = ["One moment, please.", FlushSentinel()] if flush_first else []
    items += _tokens("Sure thing, try this.")
    out = [p async for p in shape_for_speech(_stream(*items), SpokenReplyOptions())]  # type: ignore[arg-type]
    text = "".join(p for p in out if isinstance(p, str))
    assert text.endswith("Sure thing, try this.")
    # upstream's flush is kept, and each reply gets its own first-clause flush
    assert sum(isinstance(p, FlushSentinel) for p in out) == (3 if flush_first else 1)
