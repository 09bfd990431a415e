"""Audio in, filtered transcript out: admission through the queue, model and noise filter in its thread."""

from __future__ import annotations

import numpy as np

from whisper_stt.language_models import LanguageModels
from whisper_stt.metrics import WhisperMetrics
from whisper_stt.model import DEFAULT_TEMPERATURES, SAMPLE_RATE, Transcript
from whisper_stt.noise_filter import NoiseFilter
from whisper_stt.transcription_queue import Priority, TranscriptionQueue

MIN_AUDIO_S = 0.1
# Below this peak (-80 dBFS) there is nothing to hear: skip the model.
SILENCE_PEAK = 1e-4

INTERIM_TEMPERATURES = (0.0,)  # interims are redone soon anyway: no fallback passes


class SpeechRecognizer:
    def __init__(
        self,
        *,
        transcriber: LanguageModels,
        noise_filter: NoiseFilter,
        queue: TranscriptionQueue,
        metrics: WhisperMetrics,
    ) -> None:
        self.transcriber = transcriber
        self.noise_filter = noise_filter
        self.queue = queue
        self.metrics = metrics

    def empty(self, *, language: str, duration: float) -> Transcript:
        return Transcript(text="", language=language, duration=duration, segments=(), encoder_frames=0)

    async def transcribe(
        self,
        audio: np.ndarray,
        *,
        priority: Priority,
        language: str,
        prompt: str | None = None,
        temperatures: tuple[float, ...] | None = None,
        stream_id: str | None = None,
    ) -> Transcript:
        """Raises Overloaded (finals) or InterimShed (interims) under load.

        The language is already checked.
        """
        duration = len(audio) / SAMPLE_RATE
        if duration < MIN_AUDIO_S or float(np.max(np.abs(audio))) < SILENCE_PEAK:
            return self.empty(language=language, duration=duration)
        interim = priority == Priority.INTERIM

        def run() -> tuple[Transcript, list[str]]:
            transcript = self.transcriber.transcribe(
                audio,
                language=language,
                prompt=prompt,
                temperatures=temperatures or (INTERIM_TEMPERATURES if interim else DEFAULT_TEMPERATURES),
                beam_size=1 if interim else None,
            )
            filtered, dropped = self.noise_filter.apply(transcript, audio)
            return filtered, [d.reason for d in dropped]

        transcript, dropped = await self.queue.run(run, priority=priority, stream_id=stream_id)
        for reason in dropped:
            self.metrics.segments_dropped.labels(reason).inc()
        if transcript.retried_full_window:
            self.metrics.short_window_retries.inc()
        return transcript
