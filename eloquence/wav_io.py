"""WAV files as the AgentSession's microphone and speaker (`eloquence talk`, `eloquence bench`).

`WavAudioInput` behaves like a live microphone: it yields 20 ms frames every 20 ms, silence until
`start_utterance()`, then the WAV's audio, then trailing silence so that the VAD ends the turn,
then silence again until it is closed. `WavAudioOutput` records what the agent says, segment by
segment, and writes it to a WAV file.

The harness clocks (`time.perf_counter()`; -40 dBFS is `sidecar_common.pcm.VOICED_DBFS`):
- t0 (`WavAudioInput.last_voiced_at`): when the frame holding the last input sample above
  -40 dBFS was delivered to the session;
- t1 (`OutputSegment.first_voiced_at`): when the first reply frame with a sample above
  -40 dBFS reached `capture_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from livekit import rtc
from livekit.agents.voice import io

from sidecar_common.pcm import float_to_pcm16, is_voiced_pcm16, last_voiced_sample, pcm16_to_float

SAMPLE_RATE = 16000
FRAME_S = 0.02


class WavFormatError(ValueError):
    """The input file is missing, not a WAV, or holds no audio; the message says which."""


def read_wav(path: str | Path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32 mono samples at `sample_rate` from a WAV file (any rate, any channel count)."""
    path = Path(path)
    if not path.is_file():
        raise WavFormatError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise WavFormatError(f"{path}: not a WAV file ({e})") from None
    if info.format not in ("WAV", "WAVEX"):
        raise WavFormatError(f"{path}: not a WAV file (it is {info.format_info or info.format})")
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise WavFormatError(f"{path}: unreadable WAV ({e})") from None
    if samples.size == 0:
        raise WavFormatError(f"{path}: the WAV holds no audio")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _to_frame(samples: np.ndarray, sample_rate: int) -> rtc.AudioFrame:
    return rtc.AudioFrame(float_to_pcm16(samples), sample_rate, 1, len(samples))


class WavAudioInput(io.AudioInput):
    """A microphone that speaks a WAV file on cue, at real-time pace."""

    def __init__(
        self,
        *,
        samples: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        trailing_silence_s: float = 2.0,
        frame_s: float = FRAME_S,
    ) -> None:
        super().__init__(label="WavFile")
        self._samples = np.asarray(samples, dtype=np.float32)
        self._rate = sample_rate
        self._frame_len = int(round(frame_s * sample_rate))
        self._frame_s = self._frame_len / sample_rate
        self._trailing_frames = int(np.ceil(trailing_silence_s / self._frame_s))
        self._last_voiced = last_voiced_sample(self._samples)
        self._silence = np.zeros(self._frame_len, dtype=np.float32)

        self._next_at: float | None = None
        self._cursor: int | None = None  # sample index into the WAV while speaking
        self._trailing_left = 0
        self._closed = asyncio.Event()

        self.utterance_started_at: float | None = None
        """perf_counter when the first WAV frame was delivered."""
        self.last_voiced_at: float | None = None
        """t0: perf_counter when the frame holding the last sample above -40 dBFS was delivered."""
        self.utterance_done = asyncio.Event()
        """Set once the WAV and its trailing silence have been delivered."""
        self.max_early_s = 0.0
        """How far ahead of real time (counted from the WAV's first frame) any WAV frame was
        delivered: 0 when paced, a frame or more when a stalled loop caught up in a burst."""

    @property
    def duration_s(self) -> float:
        return len(self._samples) / self._rate

    @property
    def speaking(self) -> bool:
        return self._cursor is not None

    def start_utterance(self) -> None:
        """Deliver the WAV from the next frame on (once)."""
        if self.utterance_started_at is not None or self._cursor is not None:
            raise RuntimeError("the utterance was already started")
        self._cursor = 0

    def close(self) -> None:
        self._closed.set()

    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed.is_set():
            raise StopAsyncIteration
        loop = asyncio.get_running_loop()
        if self._next_at is None:
            self._next_at = loop.time()
        # a microphone hands over a frame once its 20 ms have been recorded
        self._next_at += self._frame_s
        delay = self._next_at - loop.time()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), delay)
            if self._closed.is_set():
                raise StopAsyncIteration
        return self._next_frame()

    def _next_frame(self) -> rtc.AudioFrame:
        now = time.perf_counter()
        if self._cursor is None:
            if self._trailing_left > 0:
                self._trailing_left -= 1
                if self._trailing_left == 0:
                    self.utterance_done.set()
            return _to_frame(self._silence, self._rate)

        start = self._cursor
        end = start + self._frame_len
        chunk = self._samples[start:end]
        if len(chunk) < self._frame_len:
            chunk = np.concatenate([chunk, self._silence[: self._frame_len - len(chunk)]])
        if start == 0:
            self.utterance_started_at = now
        elif self.utterance_started_at is not None:
            due = self.utterance_started_at + (start // self._frame_len) * self._frame_s
            self.max_early_s = max(self.max_early_s, due - now)
        if self._last_voiced is not None and start <= self._last_voiced < end:
            self.last_voiced_at = now
        self._cursor = end
        if end >= len(self._samples):
            self._cursor = None
            self._trailing_left = max(self._trailing_frames, 1)
        return _to_frame(chunk, self._rate)


@dataclass
class OutputSegment:
    """One flush-delimited stretch of agent speech (the greeting, a reply, ...)."""

    started_at: float
    """perf_counter of its first frame at capture_frame."""
    offset_s: float
    """Where it starts in the output WAV."""
    first_voiced_at: float | None = None
    """perf_counter of its first frame holding a sample above -40 dBFS."""
    duration_s: float = 0.0
    interrupted: bool = False
    finished: bool = False


class WavAudioOutput(io.AudioOutput):
    """The agent's speaker: keeps every frame, in order, to write one WAV at the end.

    Nothing is played, so a segment counts as played out as soon as it is flushed.
    """

    def __init__(self, *, sample_rate: int | None = None) -> None:
        super().__init__(
            label="WavFile",
            next_in_chain=None,
            sample_rate=sample_rate,
            capabilities=io.AudioOutputCapabilities(pause=False),
        )
        self._rate: int | None = sample_rate
        self._chunks: list[np.ndarray] = []
        self._total_samples = 0
        self.segments: list[OutputSegment] = []
        self._current: OutputSegment | None = None

    @property
    def output_sample_rate(self) -> int | None:
        return self._rate

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        now = time.perf_counter()
        samples = np.frombuffer(frame.data, dtype="<i2")
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype("<i2")
        if self._rate is None:
            self._rate = frame.sample_rate
        elif frame.sample_rate != self._rate:
            import soxr

            resampled = soxr.resample(pcm16_to_float(samples.tobytes()), frame.sample_rate, self._rate)
            samples = np.frombuffer(float_to_pcm16(resampled), dtype="<i2")

        if self._current is None:
            self._current = OutputSegment(started_at=now, offset_s=self._total_samples / self._rate)
            self.segments.append(self._current)
            self.on_playback_started(created_at=time.time())
        segment = self._current
        if segment.first_voiced_at is None and is_voiced_pcm16(samples.tobytes()):
            segment.first_voiced_at = now
        self._chunks.append(samples.copy())
        self._total_samples += len(samples)
        segment.duration_s += len(samples) / self._rate

    def flush(self) -> None:
        super().flush()
        segment, self._current = self._current, None
        if segment is not None:
            # reported on the next loop turn: a clear_buffer() right after the flush still counts
            asyncio.get_running_loop().call_soon(self._finish, segment)

    def clear_buffer(self) -> None:
        if self._current is not None:
            self._current.interrupted = True
        elif self.segments and not self.segments[-1].finished:
            self.segments[-1].interrupted = True

    def _finish(self, segment: OutputSegment) -> None:
        segment.finished = True
        self.on_playback_finished(playback_position=segment.duration_s, interrupted=segment.interrupted)

    def audio(self) -> np.ndarray:
        """Everything captured so far, as int16 mono."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype="<i2")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), self.audio(), self._rate or 24000, subtype="PCM_16", format="WAV")
        return path
