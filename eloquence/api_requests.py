"""Request context and validation for `eloquence api`: the app keys, body parsing, field checks,
the exercise fallback and the per-caller rate limit. A client error is raised as `RequestError`."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .api_metrics import APIMetrics
from .auth import Authenticator, Caller
from .exercises import ExerciseRegistry
from .rate_limits import RateLimits, per_minute
from .settings import AppSettings

logger = logging.getLogger("eloquence.api")

IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
"""user_id / agent_id: 1–64 characters, letters, digits and `_ . @ -`, not starting with a symbol."""
ROOM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BODY_BYTES = 16 * 1024

SETTINGS_KEY = web.AppKey("settings", AppSettings)
REGISTRY_KEY = web.AppKey("registry", ExerciseRegistry)
LIMITS_KEY = web.AppKey("limits", RateLimits)
AUTH_KEY = web.AppKey("auth", Authenticator)
METRICS_KEY = web.AppKey("metrics", APIMetrics)
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
CALLER = web.RequestKey("caller", Caller)


class RequestError(Exception):
    """A client error: becomes a 4xx JSON error response."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise RequestError(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_json", "the request body must be a JSON object")
    return body


def identifier(body: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise RequestError(400, "invalid_request", f"`{field}` is required", field=field)
        return None
    if not isinstance(value, str) or not IDENTIFIER_RE.match(value):
        raise RequestError(
            400,
            "invalid_request",
            f"`{field}` must be 1-64 characters: letters, digits, `_`, `.`, `@`, `-`",
            field=field,
        )
    return value


@dataclass(frozen=True)
class ExerciseChoice:
    name: str
    """The exercise the agent will run (what goes into the metadata)."""
    warnings: tuple[str, ...] = ()

    def response_fields(self) -> dict[str, Any]:
        """Added to a 200 response after a fallback: what runs instead, and why."""
        return {"exercise_type": self.name, "warnings": list(self.warnings)} if self.warnings else {}


def choose_exercise(request: web.Request, body: dict[str, Any], *, default: str | None) -> ExerciseChoice:
    """An unknown `exercise_type` runs the default exercise, with a warning in the response: the same
    fallback as the agent's (eloquence/metadata.py), so a client's new exercise is never refused here."""
    registry = request.app[REGISTRY_KEY]
    value = body.get("exercise_type", default)
    if value is None:
        raise RequestError(400, "invalid_request", "`exercise_type` is required", field="exercise_type")
    if not isinstance(value, str):
        raise RequestError(
            400,
            "invalid_request",
            "`exercise_type` must be a string",
            field="exercise_type",
            valid_exercises=registry.names(),
        )
    if value in registry:
        return ExerciseChoice(value)
    fallback = registry.resolve(None).name
    warning = (
        f"unknown exercise_type {value[:64]!r}; running {fallback!r} "
        f"(valid exercises: {', '.join(registry.names())})"
    )
    logger.warning("%s", warning)
    return ExerciseChoice(fallback, (warning,))


def exercise_config(body: dict[str, Any]) -> dict[str, Any]:
    """`config`: an object, or absent / null for none. `0`, `""` or `[]` are refused, not read as none."""
    config = body.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise RequestError(400, "invalid_request", "`config` must be an object", field="config")
    return config


async def rate_limit(request: web.Request) -> Caller:
    """Count this request against its authenticated caller (never a body field); 429 over the limit."""
    settings = request.app[SETTINGS_KEY]
    caller = request[CALLER]
    per_min = (
        settings.api_key_rate_limit_per_minute
        if caller.kind == "api_key"
        else settings.api_rate_limit_per_minute
    )
    retry_after = await request.app[LIMITS_KEY].hit(per_minute(per_min), caller.limit_key)
    if retry_after > 0:
        request.app[METRICS_KEY].rate_limited.labels(caller.kind).inc()
        raise RequestError(
            429, "rate_limited", "too many requests; slow down", retry_after_s=round(retry_after, 1)
        )
    return caller


def request_user_id(caller: Caller, body: dict[str, Any], *, required: bool) -> str | None:
    """A verified user's id comes from their token; an API-key caller names the user in the body."""
    if caller.user_id is None:
        return identifier(body, "user_id", required=required)
    claimed = body.get("user_id")
    if claimed is not None and claimed != caller.user_id:
        raise RequestError(
            403, "user_mismatch", "`user_id` differs from the user token's subject; omit it", field="user_id"
        )
    return caller.user_id
