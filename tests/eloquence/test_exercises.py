"""The exercise registry: the shipped exercises, their text, and adding a new one."""

from __future__ import annotations

import pytest

from eloquence.exercises import (
    DEFAULT_EXERCISE,
    REGISTRY,
    Exercise,
    ExerciseRegistry,
    ExerciseText,
    UnknownExerciseError,
    exercise_names,
    get_exercise,
    print_registry,
    resolve_exercise,
)

SHIPPED = {"confidence_boost", "presentation_skills", "interview_prep", "default"}


def test_ships_the_four_exercises() -> None:
    assert set(exercise_names()) >= SHIPPED
    assert exercise_names() == sorted(exercise_names())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_exercise_has_english_and_french_text(name: str) -> None:
    exercise = get_exercise(name)
    for lang in ("en", "fr"):
        assert exercise.greeting(lang).strip()
        assert len(exercise.instructions(lang)) > 80
    assert exercise.greeting("en") != exercise.greeting("fr")
    assert exercise.voice_context in {"greeting", "coaching"}
    assert exercise.language == "en"  # the models that install here are English


def test_confidence_boost_is_coach_marie() -> None:
    marie = get_exercise("confidence_boost")
    assert marie.greeting("fr").startswith("Bonjour ! Je suis Marie, votre coach en confiance")
    assert "Marie" in marie.greeting("en")
    assert "Marie" in marie.instructions("en") and "Marie" in marie.instructions("fr")


def test_instructions_ask_for_short_spoken_answers_in_the_language() -> None:
    assert "no markdown" in get_exercise("default").instructions("en")
    assert "pas de markdown" in get_exercise("default").instructions("fr")


def test_language_resolution() -> None:
    exercise = get_exercise("interview_prep")
    assert exercise.resolve_language("fr-FR") == "fr"
    assert exercise.resolve_language("FR") == "fr"
    assert exercise.resolve_language("de") == "en"  # no German text: the exercise's default
    assert exercise.resolve_language(None) == "en"


def test_unknown_exercise_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownExerciseError) as info:
        get_exercise("juggling")
    assert info.value.valid == exercise_names()
    assert "confidence_boost" in str(info.value)
    assert resolve_exercise("juggling").name == DEFAULT_EXERCISE
    assert resolve_exercise(None).name == DEFAULT_EXERCISE


def test_adding_an_exercise_is_one_declaration() -> None:
    registry = ExerciseRegistry()
    for exercise in REGISTRY:
        registry.register(exercise)
    registry.register(
        Exercise(
            name="storytelling",
            title="Storytelling",
            voice_context="coaching",
            text={
                "en": ExerciseText(persona="You coach storytelling.", greeting="Tell me a story!"),
                "fr": ExerciseText(persona="Tu coaches le récit.", greeting="Racontez-moi une histoire !"),
            },
        )
    )
    assert registry.get("storytelling").greeting("fr") == "Racontez-moi une histoire !"
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("storytelling"))
    assert "storytelling" not in REGISTRY  # the shared registry is untouched


def test_an_exercise_without_french_text_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks text for fr"):
        Exercise(
            name="x",
            title="x",
            voice_context="coaching",
            text={"en": ExerciseText(persona="p", greeting="g")},
        )


def test_print_registry_lists_every_exercise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert print_registry() == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert name in out


def test_quick_replies_are_off_unless_an_exercise_opts_in_per_language() -> None:
    for exercise in REGISTRY:
        assert not exercise.quick_replies("en") and not exercise.quick_replies("fr")
    small_talk = Exercise(
        name="small_talk",
        title="Small talk",
        voice_context="coaching",
        text={
            "en": ExerciseText(persona="p", greeting="g", quick_replies={"thank you": "You're welcome!"}),
            "fr": ExerciseText(persona="p", greeting="g", quick_replies={"merci": "Avec plaisir !"}),
        },
    )
    assert dict(small_talk.quick_replies("fr-FR")) == {"merci": "Avec plaisir !"}
    assert dict(small_talk.quick_replies("de")) == {"thank you": "You're welcome!"}  # the default language
    with pytest.raises(ValueError, match="must not be blank"):
        ExerciseText(persona="p", greeting="g", quick_replies={"merci": "  "})
