"""Request bodies and websocket messages, validated with pydantic (unknown fields are ignored)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SampleRate = Literal[16000, 24000]
_LANGUAGE = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"
# SSML prosody pitch: a named level or a relative/absolute change.
_PITCH = r"^(x-low|low|medium|high|x-high|default|[+-]?\d{1,4}(\.\d{1,2})?(Hz|st|%))$"
_STYLE = r"^[A-Za-z][A-Za-z0-9-]{0,40}$"


class VoiceFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    voice: str | None = Field(None, max_length=200)
    context: str | None = Field(None, max_length=100)
    language: str | None = Field(None, pattern=_LANGUAGE)
    rate: float | None = Field(None, ge=0.5, le=2.0)
    """Speaking rate, 1.0 is normal."""
    pitch: str | None = Field(None, pattern=_PITCH)
    style: str | None = Field(None, pattern=_STYLE)
    sample_rate: SampleRate = 24000


class SynthesizeRequest(VoiceFields):
    text: str
    format: Literal["pcm", "wav"] = "pcm"


class OpenAISpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body; `model` and other fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    input: str
    voice: str | None = Field(None, max_length=200)
    response_format: Literal["wav", "pcm"] = "wav"
    speed: float | None = Field(None, ge=0.5, le=2.0)
    sample_rate: SampleRate = 24000


class StreamConfig(VoiceFields):
    type: Literal["config"]


class StreamText(BaseModel):
    type: Literal["text"]
    text: str


def validation_message(error: ValidationError) -> str:
    """One line naming each bad field: "sample_rate: Input should be 16000 or 24000"."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
