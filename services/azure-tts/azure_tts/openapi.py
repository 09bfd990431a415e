"""The azure-tts operations in its OpenAPI document (`GET /openapi.json`; API.md has the prose)."""

from __future__ import annotations

from typing import Any

from sidecar_common.openapi import binary_content, errors, json_content

from .messages import OpenAISpeechRequest, SynthesizeRequest


def _body(
    model: type[SynthesizeRequest] | type[OpenAISpeechRequest], text_field: str, **limits: Any
) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["properties"][text_field] = {**schema["properties"][text_field], **limits}
    return schema


def paths(*, voices: list[str], languages: list[str], max_text_chars: int) -> dict[str, Any]:
    """`voices`: the loaded voices (another is a 400 `unknown_voice`); `max_text_chars`: the text limit."""
    text_limit = {"maxLength": max_text_chars}
    synthesize = _body(SynthesizeRequest, "text", **text_limit)
    speech = _body(OpenAISpeechRequest, "input", **text_limit)
    # a language no loaded voice speaks is a 400 `unknown_voice`: the document lists the ones served
    tags = sorted({*languages, *(tag.split("-")[0] for tag in languages)})
    synthesize["properties"]["language"] = {"anyOf": [{"type": "string", "enum": tags}, {"type": "null"}]}
    for schema in (synthesize, speech):
        # "" or null: the context's (or the default) voice, as the server reads them
        named = {"type": "string", "enum": [*voices, ""]}
        schema["properties"]["voice"] = {"anyOf": [named, {"type": "null"}]}
    audio = {
        "description": "16-bit mono PCM (chunked) or a WAV file",
        "content": binary_content("audio/pcm", "audio/wav"),
    }
    return {
        "/v1/voices": {
            "get": {
                "summary": "The loaded voices and the voice of each context.",
                "responses": {
                    "200": {"description": "ok", "content": json_content({"type": "object"})},
                    **errors(401),
                },
            }
        },
        "/v1/synthesize": {
            "post": {
                "summary": "Speak `text`; audio streams back in 200 ms pieces.",
                "requestBody": {"required": True, "content": json_content(synthesize)},
                "responses": {"200": audio, **errors(400, 401, 413, 429, 502, 504)},
            }
        },
        "/v1/audio/speech": {
            "post": {
                "summary": "OpenAI-compatible speech (`input`, `voice`, `response_format`, `speed`).",
                "requestBody": {"required": True, "content": json_content(speech)},
                "responses": {"200": audio, **errors(400, 401, 413, 429, 502, 504)},
            }
        },
    }
