"""The OpenAPI 3.1 document of `eloquence api` (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from .api_requests import IDENTIFIER_RE, ROOM_NAME_RE
from .exercises import DEFAULT_EXERCISE

CALLER_ERRORS = (400, 401, 403, 413, 429)
"""What every POST route can answer about the caller's request: body, credentials, user, size, rate."""


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "valid_exercises": {"type": "array", "items": {"type": "string"}},
                    "retry_after_s": {"type": "number"},
                },
            }
        },
    }


def openapi_document(exercises: list[str]) -> dict[str, Any]:
    identifier = {"type": "string", "pattern": IDENTIFIER_RE.pattern, "maxLength": 64}
    exercise = {
        "type": "string",
        "examples": exercises,
        "description": (
            f"one of {', '.join(exercises)}; any other name runs `{DEFAULT_EXERCISE}`, and the 200 "
            "response then carries `exercise_type` (what runs) and `warnings`"
        ),
    }
    fallback = {
        "exercise_type": {"type": "string", "description": "after a fallback: the exercise that runs"},
        "warnings": {"type": "array", "items": {"type": "string"}, "description": "after a fallback: why"},
    }
    config = {
        "type": ["object", "null"],
        "description": 'exercise options, e.g. {"language": "fr"}; null: none',
    }

    def errors(*codes: int) -> dict[str, Any]:
        return {
            str(code): {
                "description": desc,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code, desc in {
                400: "invalid body or field",
                401: "missing or invalid credentials (WWW-Authenticate: Bearer)",
                403: "`user_id` differs from the verified user token's subject",
                413: "body too large",
                429: "rate limited (Retry-After header)",
                502: "LiveKit refused the call",
                503: "LiveKit, or the identity provider's signing keys (JWKS), unreachable",
            }.items()
            if code in codes
        }

    def post(
        summary: str,
        required: list[str],
        props: dict[str, Any],
        response: dict[str, Any],
        *codes: int,
        any_of: list[str] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "object", "required": required, "properties": props}
        if any_of:  # at least one of these fields
            body["anyOf"] = [{"required": [name]} for name in any_of]
        return {
            "post": {
                "summary": summary,
                "security": [{"bearerAuth": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": {"type": "object", "properties": response}}
                        },
                    },
                    **errors(*codes),
                },
            }
        }

    string = {"type": "string"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eloquence API",
            "version": "0.1.0",
            "description": "LiveKit tokens, rooms and agent dispatch for the Eloquence coach.",
        },
        "paths": {
            "/api/livekit/token": post(
                "Mint a 1 h LiveKit token for a new room; joining dispatches the coach with the exercise.",
                ["exercise_type", "user_id"],
                {"exercise_type": exercise, "user_id": identifier, "config": config},
                {"token": string, "livekit_url": string, "room_name": string, **fallback},
                *CALLER_ERRORS,
                503,
            ),
            "/api/livekit/create-room": post(
                "Create a room `voicebot_<agent>_<random>` with the coach dispatched, and a token for it.",
                [],
                {"agent_id": identifier, "exercise_type": exercise, "user_id": identifier, "config": config},
                {"room_name": string, "access_token": string, "livekit_url": string, **fallback},
                *CALLER_ERRORS,
                502,
                503,
                any_of=["agent_id", "exercise_type"],
            ),
            "/api/livekit/job-notification": post(
                "Dispatch the coach to an existing room.",
                ["agent_id", "room_name"],
                {
                    "agent_id": identifier,
                    "room_name": {"type": "string", "pattern": ROOM_NAME_RE.pattern, "maxLength": 128},
                    "exercise_type": exercise,
                    "user_id": identifier,
                    "config": config,
                },
                {"dispatch_id": string, "room_name": string, "agent_name": string, **fallback},
                *CALLER_ERRORS,
                502,
                503,
            ),
            "/api/livekit/health": {
                "get": {
                    "summary": "LiveKit reachability and each sidecar's health (200 while the API is up).",
                    "responses": {
                        "200": {
                            "description": "`status` is ok when everything is healthy, else degraded",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "status": {"type": "string", "enum": ["ok", "degraded"]},
                                            "livekit": {"type": "object"},
                                            "services": {"type": "object"},
                                        },
                                    }
                                }
                            },
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {"Error": _error_schema()},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (ELOQUENCE_API_KEYS) or a user JWT (HS256 or JWKS)",
                }
            },
        },
    }
