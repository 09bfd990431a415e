"""The faster-whisper wrapper: one shared model, and a blocking `transcribe` meant for a worker thread.

`transcribe` runs the whole inference, including iterating faster-whisper's lazy segments
generator, so the caller's thread does all the work and the event loop none.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from faster_whisper import WhisperModel

logger = logging.getLogger("whisper_stt.model")

SAMPLE_RATE = 16000
_FRAMES_PER_SECOND = 100  # log-mel frames (hop of 160 samples at 16 kHz)
_FULL_WINDOW_FRAMES = 3000  # the 30 s window every stock pass pads to
# Each fallback pass reuses the encoder output, so it only costs a decode; three steps, not
# faster-whisper's six, because a final is on the critical path of a turn.
DEFAULT_TEMPERATURES = (0.0, 0.4, 0.8)
# Bounds a decoder loop: fast speech is under 5 tokens a second, timestamps included.
_MAX_TOKENS_PER_SECOND = 8
_MAX_TOKENS_SLACK = 16
# The model's 448 tokens hold the prompt too: faster-whisper keeps up to 223 tokens of an initial
# prompt, plus the start-of-transcript sequence.
_MAX_NEW_TOKENS = 440
_MAX_NEW_TOKENS_WITH_PROMPT = 220


def longest_repeat(tokens: list[str], *, max_ngram: int = 4) -> int:
    """How many times in a row the most repeated run of 1..max_ngram tokens occurs."""
    best = 1
    for n in range(1, max_ngram + 1):
        for start in range(len(tokens) - n + 1):
            count, i = 1, start + n
            while tokens[i : i + n] == tokens[start : start + n]:
                count += 1
                i += n
            best = max(best, count)
    return best


def is_degenerate(transcript: Transcript, *, repeat_max: int = 4, max_words_per_second: float = 6.0) -> bool:
    """Decoder loops, the known failure of a short encoder window: 'Stop stop stop ...', 'Yes? . . . .'.

    Judged against the audio, not the text alone: legitimately repeated speech keeps a speaking rate.
    """
    words = transcript.text.split()
    if len(words) > max(3.0, transcript.duration * max_words_per_second):
        return True
    # The whole text: with timestamps, each turn of a loop may be a segment of its own.
    return longest_repeat(words) >= repeat_max


class UnsupportedLanguageError(ValueError):
    def __init__(self, language: str, supported: list[str], *, hint: str | None = None) -> None:
        shown = ", ".join(supported[:20]) + (" ..." if len(supported) > 20 else "")
        where = "served here" if hint else "supported by this model"
        super().__init__(
            f"language {language!r} is not {where} (supported: {shown})" + (f"; {hint}" if hint else "")
        )
        self.language = language
        self.supported = supported


@dataclass(frozen=True)
class TranscriptSegment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: tuple[TranscriptSegment, ...]
    encoder_frames: int
    """Encoder window of the first pass: 3000 for the stock 30 s window."""
    retried_full_window: bool = False
    """The short window gave degenerate output, so this is the full window's transcript."""

    @property
    def avg_logprob(self) -> float:
        """Length-weighted mean over the segments (0.0 when there are none)."""
        if not self.segments:
            return 0.0
        weights = [max(s.end - s.start, 0.01) for s in self.segments]
        return float(np.average([s.avg_logprob for s in self.segments], weights=weights))

    @property
    def no_speech_prob(self) -> float:
        """The highest over the segments (1.0 when there are none: nothing was heard)."""
        return max((s.no_speech_prob for s in self.segments), default=1.0)


class _WindowedWhisperModel(WhisperModel):
    """faster-whisper, except that the encoder may see a shorter window than 30 s.

    faster-whisper pads every window's log-mel features to 3000 frames before `encode`, and the
    encoder's cost is proportional to that, whatever the utterance length. `transcribe` sets the
    window for the call in a thread-local (the whole call runs in one thread); `encode` cuts the
    padding down to it. `None` keeps the stock behaviour.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = threading.local()

    def encode(self, features: np.ndarray) -> Any:
        frames = getattr(self.window, "frames", None)
        if frames is not None and features.shape[-1] > frames:
            features = np.ascontiguousarray(features[..., :frames])
        return super().encode(features)


class WhisperTranscriber:
    """Loads one CTranslate2 Whisper model; `transcribe` is blocking and thread-safe."""

    def __init__(
        self,
        *,
        model_path: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        workers: int = 1,
        beam_size: int = 1,
        default_language: str = "en",
        encoder_window: Literal["full", "utterance"] = "full",
        min_window_s: float = 10.0,
        margin_s: float = 2.0,
    ) -> None:
        self.model_path = model_path
        self.beam_size = beam_size
        self.encoder_window = encoder_window
        self.min_window_s = min_window_s
        self.margin_s = margin_s
        self._model = _WindowedWhisperModel(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, num_workers=workers
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.default_language = self.check_language(default_language)

    def warm_up(self) -> None:
        """One pass on a second of faint noise, so the first request does not pay for lazy set-up."""
        noise = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        self.transcribe(noise, temperatures=(0.0,))

    @property
    def supported_languages(self) -> list[str]:
        return list(self._model.supported_languages)

    def check_language(self, language: str | None) -> str:
        """The normalized language code, or UnsupportedLanguageError (an English-only model knows 'en')."""
        if language is None or not language.strip():
            return getattr(self, "default_language", "en")
        code = language.strip().lower().split("-")[0].split("_")[0]
        if code not in self.supported_languages:
            raise UnsupportedLanguageError(language, self.supported_languages)
        return code

    def window_frames(self, samples: int) -> int | None:
        """Encoder frames for audio of `samples`, or None for the stock 30 s window."""
        if self.encoder_window == "full":
            return None
        seconds = samples / SAMPLE_RATE + self.margin_s
        frames = max(self.min_window_s, math.ceil(seconds)) * _FRAMES_PER_SECOND
        return int(frames) if frames < _FULL_WINDOW_FRAMES else None

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
        beam_size: int | None = None,
        timestamps: bool = True,
        full_window: bool = False,
    ) -> Transcript:
        """Blocking: float32 mono 16 kHz audio to a transcript. Call it from a worker thread."""
        frames = None if full_window else self.window_frames(len(audio))
        transcript = self._transcribe(audio, frames, language, prompt, temperatures, beam_size, timestamps)
        if frames is not None and is_degenerate(transcript):
            logger.info("short encoder window looped (%r); redoing on the full window", transcript.text[:80])
            full = self._transcribe(audio, None, language, prompt, temperatures, beam_size, timestamps)
            return dataclasses.replace(full, encoder_frames=frames, retried_full_window=True)
        return transcript

    def _transcribe(
        self,
        audio: np.ndarray,
        frames: int | None,
        language: str | None,
        prompt: str | None,
        temperatures: tuple[float, ...],
        beam_size: int | None,
        timestamps: bool,
    ) -> Transcript:
        self._model.window.frames = frames
        try:
            segments, info = self._model.transcribe(
                audio,
                language=self.check_language(language),
                task="transcribe",
                beam_size=beam_size or self.beam_size,
                temperature=list(temperatures),
                initial_prompt=prompt or None,
                condition_on_previous_text=False,
                without_timestamps=not timestamps,
                vad_filter=False,
                max_new_tokens=min(
                    _MAX_NEW_TOKENS_WITH_PROMPT if prompt else _MAX_NEW_TOKENS,
                    int(len(audio) / SAMPLE_RATE * _MAX_TOKENS_PER_SECOND) + _MAX_TOKENS_SLACK,
                ),
            )
            # The generator does the decoding: drain it here, in this thread.
            result = tuple(
                TranscriptSegment(
                    start=float(s.start),
                    end=float(s.end),
                    text=s.text.strip(),
                    avg_logprob=float(s.avg_logprob),
                    no_speech_prob=float(s.no_speech_prob),
                    compression_ratio=float(s.compression_ratio),
                )
                for s in segments
            )
        finally:
            self._model.window.frames = None
        text = " ".join(s.text for s in result if s.text)
        return Transcript(
            text=text,
            language=info.language,
            duration=float(info.duration),
            segments=result,
            encoder_frames=frames or _FULL_WINDOW_FRAMES,
        )
