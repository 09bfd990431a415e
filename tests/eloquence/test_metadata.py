"""Job / room metadata → exercise: unknown and malformed metadata fall back to the default."""

from __future__ import annotations

import json
import logging

import pytest

from eloquence.metadata import build_metadata, parse_metadata


def test_job_metadata_selects_the_exercise_user_and_config() -> None:
    raw = json.dumps({"exercise_type": "confidence_boost", "user_id": "u1", "config": {"difficulty": "hard"}})
    meta = parse_metadata(("job", raw), ("room", None))
    assert meta.exercise.name == "confidence_boost"
    assert meta.user_id == "u1"
    assert meta.config == {"difficulty": "hard"}
    assert meta.language == "en"
    assert meta.warnings == ()
    assert not meta.fell_back


def test_job_metadata_wins_over_room_metadata_and_room_is_the_fallback() -> None:
    job = build_metadata(exercise_type="interview_prep")
    room = build_metadata(exercise_type="presentation_skills")
    assert parse_metadata(("job", job), ("room", room)).exercise.name == "interview_prep"
    assert parse_metadata(("job", ""), ("room", room)).exercise.name == "presentation_skills"


def test_config_language_picks_the_french_text() -> None:
    raw = build_metadata(exercise_type="confidence_boost", config={"language": "fr"})
    meta = parse_metadata(("job", raw))
    assert meta.language == "fr"
    assert meta.exercise.greeting(meta.language).startswith("Bonjour ! Je suis Marie")


def test_default_language_comes_from_settings() -> None:
    meta = parse_metadata(("job", build_metadata(exercise_type="default")), default_language="fr")
    assert meta.language == "fr"


def test_unknown_exercise_gets_the_default_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eloquence.metadata"):
        meta = parse_metadata(("job", build_metadata(exercise_type="juggling", user_id="u2")))
    assert meta.exercise.name == "default"
    assert meta.requested_exercise == "juggling" and meta.fell_back
    assert meta.user_id == "u2"
    assert any("juggling" in w for w in meta.warnings)
    assert "juggling" in caplog.text


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2, 3]",
        '"confidence_boost"',
        "null",
        '{"exercise_type": 42}',
        '{"exercise_type": "default", "config": "fr"}',
        '{"exercise_type": "default", "user_id": ["x"]}',
        "{" * 5000 + "}" * 5000,
        "x" * 70_000,
    ],
)
def test_malformed_metadata_gets_the_default_with_a_warning(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eloquence.metadata"):
        meta = parse_metadata(("job", raw), ("room", ""))
    assert meta.exercise.name == "default"
    assert meta.warnings
    assert caplog.records


def test_missing_metadata_gets_the_default_silently() -> None:
    meta = parse_metadata(("job", ""), ("room", None))
    assert meta.exercise.name == "default"
    assert meta.warnings == ()


def test_malformed_job_metadata_falls_through_to_valid_room_metadata() -> None:
    meta = parse_metadata(("job", "{oops"), ("room", build_metadata(exercise_type="interview_prep")))
    assert meta.exercise.name == "interview_prep"
    assert meta.warnings  # the broken job metadata is still reported


@pytest.mark.parametrize(
    ("config", "default_language", "expected"),
    [
        ({"language": "fr-FR"}, "en", "fr"),
        ({"language": "FR"}, "en", "fr"),
        ({"language": "en"}, "fr", "en"),  # the session's wins over the deployment's
        ({}, "fr", "fr"),  # the users' client sends no config: ELOQUENCE_LANGUAGE decides
        ({"language": ""}, "fr", "fr"),
    ],
)
def test_the_sessions_language_is_config_language_else_the_deployments(
    config: dict[str, str], default_language: str, expected: str
) -> None:
    raw = build_metadata(exercise_type="default", config=config)
    meta = parse_metadata(("job", raw), default_language=default_language)
    assert meta.language == expected
    assert meta.warnings == ()


@pytest.mark.parametrize("language", ["de", 42, ["fr"]])
def test_a_language_not_served_falls_back_to_the_deployments_with_a_warning(language: object) -> None:
    raw = json.dumps({"exercise_type": "default", "config": {"language": language}})
    meta = parse_metadata(("job", raw), default_language="fr")
    assert meta.language == "fr"  # not the exercise's English: the deployment said French
    assert len(meta.warnings) == 1 and "config.language" in meta.warnings[0]
