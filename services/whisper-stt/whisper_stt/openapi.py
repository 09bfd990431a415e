"""The whisper-stt operations in its OpenAPI document (`GET /openapi.json`; API.md has the prose)."""

from __future__ import annotations

from typing import Any

from sidecar_common.openapi import errors, json_content


def paths(*, languages: list[str], response_formats: list[str]) -> dict[str, Any]:
    """`languages`: the codes the loaded models serve (any other is a 400 `unsupported_language`)."""
    form = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "WAV, FLAC or OGG audio"},
            "language": {"type": "string", "enum": languages},
            "prompt": {"type": "string"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "response_format": {"type": "string", "enum": response_formats},
        },
    }
    return {
        "/v1/audio/transcriptions": {
            "post": {
                "summary": "OpenAI-compatible transcription of one audio file.",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
                "responses": {
                    "200": {
                        "description": "`json` / `verbose_json`: the transcript; `text`: plain text",
                        "content": {
                            **json_content({"type": "object"}),
                            "text/plain": {"schema": {"type": "string"}},
                        },
                    },
                    **errors(400, 401, 413, 429),
                },
            }
        }
    }
