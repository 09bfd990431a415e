"""The local-llm operations in its OpenAPI document (`GET /openapi.json`; API.md has the prose)."""

from __future__ import annotations

from typing import Any

from sidecar_common.openapi import errors, json_content

ROLES = ["system", "developer", "user", "assistant", "tool"]


def paths() -> dict[str, Any]:
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"type": "string", "enum": ROLES},
            "content": {"type": "string", "maxLength": 2000},
        },
    }
    chat = {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": 8},
            "stream": {"type": "boolean"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "random_seed": {"type": "integer"},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "n": {"type": "integer", "enum": [1]},
        },
    }
    return {
        "/v1/models": {
            "get": {
                "summary": "The one model this service runs.",
                "responses": {
                    "200": {"description": "ok", "content": json_content({"type": "object"})},
                    **errors(401),
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "Mistral/OpenAI-compatible chat completion (SSE with `stream: true`).",
                "requestBody": {"required": True, "content": json_content(chat)},
                "responses": {
                    "200": {
                        "description": "a chat.completion, or its chunks as server-sent events",
                        "content": {
                            **json_content({"type": "object"}),
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **errors(400, 401, 429, 503),
                },
            }
        },
    }
