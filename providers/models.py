"""Literal aliases for the options the Eloquence sidecars accept (see API.md)."""

from __future__ import annotations

from typing import Literal

STTLanguages = Literal["en", "fr", "de", "es", "it", "nl", "pt"]
"""ISO codes the whisper-stt sidecar is usually run with; any code Whisper knows is accepted."""

TTSSampleRates = Literal[16000, 24000]
"""The rates the azure-tts sidecar synthesizes at (`sample_rate` on every request)."""

TTSVoiceContexts = Literal["greeting", "coaching"]
"""Voice contexts of the azure-tts sidecar (`GET /v1/voices` lists their styles)."""

TTSEngines = Literal["azure", "piper"]
"""The engine behind the azure-tts sidecar, reported in `X-Engine`."""
