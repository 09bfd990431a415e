"""The local-llm operations in its OpenAPI document (`GET /openapi.json`; API.md has the prose)."""

from __future__ import annotations

from typing import Any

from sidecar_common.openapi import errors, json_content

ROLES = ["system", "developer", "user", "assistant", "tool"]


def paths() -> dict[str, Any]:
    """What the server checks, no more: it ignores unknown fields, and the context length (in
    tokens) is no JSON Schema limit (too long a conversation is a 400 `context_length_exceeded`)."""
    text_chunk = {"type": "object", "properties": {"type": {"enum": ["text"]}, "text": {"type": "string"}}}
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ROLES},
            "content": {
                "anyOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": text_chunk}]
            },
        },
    }
    # optional fields take null as "not set", as OpenAI and Mistral clients send them (chat_request.py)
    number = {"type": ["number", "null"]}
    chat = {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {"type": "array", "items": message, "minItems": 1},
            "stream": {"description": "true: server-sent events"},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "temperature": number,
            "top_p": number,
            "presence_penalty": number,
            "frequency_penalty": number,
            "random_seed": {"type": ["integer", "null"]},
            "stop": {"anyOf": [{"type": ["string", "null"]}, {"type": "array", "items": {"type": "string"}}]},
            "n": {"enum": [1, None]},
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
                            "text/event-stream": {"schema": {}},
                        },
                    },
                    **errors(400, 401, 429, 503),
                },
            }
        },
    }
