"""Job / room metadata → the exercise to run.

Clients (and `eloquence api`) put `{"exercise_type": ..., "user_id": ..., "config": {...}}` in the
agent dispatch (job) metadata or the room metadata. Whatever arrives, the job gets an exercise:
an unknown type falls back to the default exercise, and malformed metadata does too, with a warning.

The session's language is `config.language` ("fr", "fr-FR"), else the deployment's
`ELOQUENCE_LANGUAGE` (`default_language`): it selects the STT model, the turn detector's word lists,
the persona and greeting text, and the voice (eloquence/agent.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from .exercises import DEFAULT_EXERCISE, REGISTRY, Exercise, ExerciseRegistry

logger = logging.getLogger("eloquence.metadata")

MAX_METADATA_CHARS = 64 * 1024


@dataclass(frozen=True)
class SessionMetadata:
    exercise: Exercise
    requested_exercise: str | None
    """What the metadata asked for (None when it named nothing)."""
    user_id: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    language: str = "en"
    warnings: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        return self.requested_exercise is not None and self.requested_exercise != self.exercise.name


def _decode(raw: str, source: str, warnings: list[str]) -> dict[str, Any] | None:
    if len(raw) > MAX_METADATA_CHARS:
        warnings.append(f"{source} metadata is {len(raw)} characters (max {MAX_METADATA_CHARS}); ignored")
        return None
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
        warnings.append(f"{source} metadata is not valid JSON ({e}); ignored")
        return None
    if not isinstance(value, dict):
        warnings.append(f"{source} metadata is JSON {type(value).__name__}, not an object; ignored")
        return None
    return value


def _session_language(requested: Any, default_language: str, exercise: Exercise, warnings: list[str]) -> str:
    """`config.language` when the exercise speaks it, else the deployment's (ELOQUENCE_LANGUAGE), else
    the exercise's own; a language asked for and not served is a warning, never a failure."""
    fallback = exercise.resolve_language(default_language)
    if requested is None or requested == "":
        return fallback
    if not isinstance(requested, str):
        kind = type(requested).__name__
        warnings.append(f"config.language must be a string, got {kind}; using {fallback!r}")
        return fallback
    if requested.split("-")[0].strip().lower() not in exercise.text:
        served = ", ".join(sorted(exercise.text))
        warnings.append(f"config.language {requested!r} is not one of {served}; using {fallback!r}")
        return fallback
    return exercise.resolve_language(requested)


def parse_metadata(
    *sources: tuple[str, str | None],
    default_language: str = "en",
    registry: ExerciseRegistry = REGISTRY,
) -> SessionMetadata:
    """Parse the first non-empty metadata among `sources` (pairs of (name, raw JSON)), in order.

    The agent passes `("job", ctx.job.metadata), ("room", ctx.room.metadata)`: the dispatch wins,
    the room metadata is the fallback. Never raises.
    """
    warnings: list[str] = []
    payload: dict[str, Any] | None = None
    for source, raw in sources:
        if raw is None or not raw.strip():
            continue
        payload = _decode(raw, source, warnings)
        if payload is not None:
            break

    payload = payload or {}
    requested = payload.get("exercise_type")
    if requested is not None and not isinstance(requested, str):
        warnings.append(f"exercise_type must be a string, got {type(requested).__name__}")
        requested = None

    if requested is None:
        exercise = registry.resolve(DEFAULT_EXERCISE)
    elif requested in registry:
        exercise = registry.get(requested)
    else:
        warnings.append(f"unknown exercise_type {requested!r}; using {DEFAULT_EXERCISE!r}")
        exercise = registry.resolve(DEFAULT_EXERCISE)

    user_id = payload.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        warnings.append("user_id must be a string; ignored")
        user_id = None

    config = payload.get("config") or {}
    if not isinstance(config, dict):
        warnings.append(f"config must be an object, got {type(config).__name__}; ignored")
        config = {}

    resolved_language = _session_language(config.get("language"), default_language, exercise, warnings)

    for warning in warnings:
        logger.warning("metadata: %s", warning)

    return SessionMetadata(
        exercise=exercise,
        requested_exercise=requested,
        user_id=user_id,
        config=config,
        language=resolved_language,
        warnings=tuple(warnings),
    )


def build_metadata(
    *, exercise_type: str, user_id: str | None = None, config: dict[str, Any] | None = None
) -> str:
    """The JSON the API puts in the dispatch and room metadata (the inverse of `parse_metadata`)."""
    payload: dict[str, Any] = {"exercise_type": exercise_type}
    if user_id is not None:
        payload["user_id"] = user_id
    if config:
        payload["config"] = config
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
