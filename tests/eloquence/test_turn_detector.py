from __future__ import annotations

import pytest
from livekit.agents import llm

from eloquence.turn_detector import TranscriptTurnDetector, end_of_turn_probability


@pytest.mark.parametrize(
    "text",
    [
        "How can I calm my nerves?",
        "I get nervous.",
        "Merci.",
        "Thank you!",
        "Comment gérer le trac ?",
        "How long should my elevator pitch be?",  # a question may end on an auxiliary
        "What can I do about that?",
    ],
)
def test_a_finished_sentence_is_a_likely_end_of_turn(text: str) -> None:
    assert end_of_turn_probability(text, "fr" if "trac" in text else "en") > 0.5


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("I would like some help with", "en"),
        ("I would like some help with my.", "en"),  # Whisper often closes a fragment with a period
        ("When I speak in meetings I usually...", "en"),
        ("When I speak in meetings I usually.", "en"),  # a lead-in adverb, closed by Whisper
        ("Could you help me with?", "en"),  # Whisper's "?" on a fragment cut by a pause
        ("Can you help me prepare for it?", "en"),  # ... and the pronoun it adds to one
        ("My biggest problem is that,", "en"),
        ("My biggest problem is that", "en"),
        ("Je voudrais de l'aide avec", "fr"),
        ("Je n'arrive pas à parler devant mon", "fr"),
        ("Je pense qu'il", "fr"),  # the elided word leads to a pronoun
        ("Le problème, c'est que j'ai", "fr"),
        ("Je travaille sur l'", "fr"),
    ],
)
def test_a_sentence_cut_on_a_dangling_word_is_unfinished(text: str, language: str) -> None:
    assert end_of_turn_probability(text, language) < 0.3


async def test_the_detector_reads_the_last_user_message() -> None:
    detector = TranscriptTurnDetector(language="en")
    ctx = llm.ChatContext()
    ctx.add_message(role="assistant", content="Hello, what would you like to work on?")
    ctx.add_message(role="user", content="I want to get better at")
    unlikely = await detector.unlikely_threshold("en")
    assert unlikely is not None
    assert await detector.predict_end_of_turn(ctx) < unlikely
    ctx.add_message(role="user", content="presenting to my team.")
    assert await detector.predict_end_of_turn(ctx) > unlikely


def test_a_language_without_word_lists_is_judged_on_punctuation_alone() -> None:
    # German "mit" is not in any list; the English list must not be applied to it either
    assert end_of_turn_probability("Ich möchte Hilfe mit", "de") == pytest.approx(0.6)
    assert end_of_turn_probability("Ich möchte Hilfe mit the", "de") == pytest.approx(0.6)
    assert end_of_turn_probability("Ich möchte Hilfe,", "de") < 0.3


async def test_turn_handling_uses_the_sessions_language_not_the_deployments() -> None:
    from eloquence.agent import default_turn_handling
    from eloquence.settings import AppSettings

    settings = AppSettings(ELOQUENCE_LANGUAGE="en", ELOQUENCE_TURN_DETECTOR="transcript")
    french = default_turn_handling(settings, language="fr")["turn_detection"]
    english = default_turn_handling(settings)["turn_detection"]
    assert isinstance(french, TranscriptTurnDetector) and isinstance(english, TranscriptTurnDetector)
    assert (french.language, english.language) == ("fr", "en")

    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Je voudrais travailler avec")
    threshold = await french.unlikely_threshold("fr")
    assert threshold is not None
    # "avec" dangles in French; the English lists do not know it
    assert await french.predict_end_of_turn(ctx) < threshold < await english.predict_end_of_turn(ctx)


@pytest.mark.parametrize(
    "text",
    [
        "Pouvez-vous m'aider à travailler mon introduction d'aujourd'hui.",
        "Vous m'aidez à préparer les monatres d'introduction.",
        "Je dois présenter les résultats de l'équipe.",
    ],
)
def test_a_sentence_ending_on_an_elided_noun_is_finished(text: str) -> None:
    # "d'introduction" ends on the noun: the elided "d'" does not make it dangle
    assert end_of_turn_probability(text, "fr") > 0.5
