"""Real-time audio delivery and the clock every measurement shares (t0).

This module imports only the standard library, numpy and `sidecar_common.pcm` (numpy only):
the pipecat peer runs it inside its own virtual environment (see `peers/venv.py`,
`peer_import_path`), so ours and theirs start the clock with the same code.

t0 is the moment the last input sample above -40 dBFS has been delivered at real-time pace.
A frame is delivered only once the time it covers has elapsed since the stream started, as a
microphone would deliver it, so t0 is the send time of the frame holding that sample.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from sidecar_common.pcm import first_voiced_sample, float_to_pcm16, last_voiced_sample

FRAME_MS = 20
PACING_TOLERANCE_S = 0.001
"""Scheduling slack allowed before a frame counts as delivered early."""


class PacingError(AssertionError):
    """Audio reached the system under test faster than real time."""


@dataclass
class PacedStream:
    """Delivers one utterance frame by frame in real time, then silence until stopped.

    `frames()` yields 16-bit PCM frames; the consumer sends each at once. The stream records
    when each frame was released, `t0` (see the module docstring) and `t_speech_start`.
    """

    samples: np.ndarray
    sample_rate: int = 16000
    frame_ms: int = FRAME_MS
    trailing_silence_s: float = 6.0
    t_start: float = 0.0
    t0: float | None = None
    t_speech_start: float | None = None
    released: list[float] = field(default_factory=list)
    _stopped: bool = False

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def speech_end_frame(self) -> int:
        last = last_voiced_sample(self.samples)
        return last // self.frame_samples if last is not None else -1

    def stop(self) -> None:
        """No more trailing silence (the reply came, or the harness gave up)."""
        self._stopped = True

    async def frames(self) -> AsyncIterator[bytes]:
        n = self.frame_samples
        padded = np.concatenate(
            [self.samples, np.zeros(int(self.trailing_silence_s * self.sample_rate), np.float32)]
        )
        total = (padded.size + n - 1) // n
        end_frame = self.speech_end_frame
        first = first_voiced_sample(self.samples)
        start_frame = first // n if first is not None else -1
        self.t_start = time.perf_counter()
        for k in range(total):
            if self._stopped:
                return
            due = self.t_start + (k + 1) * n / self.sample_rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            self.released.append(now)
            if k == start_frame:
                self.t_speech_start = now
            if k == end_frame:
                self.t0 = now
            yield float_to_pcm16(padded[k * n : (k + 1) * n])

    def endpoint_due(self, silence_ms: int) -> bool:
        """True once `silence_ms` of audio has been delivered after the frame holding t0.

        The endpoint every system compared at the sidecar level gets: the same moment for all,
        whatever their VAD would decide (VADs are compared through the stack and pipecat).
        """
        if self.t0 is None:
            return False
        frames_after = len(self.released) - 1 - self.speech_end_frame
        return frames_after * self.frame_ms >= silence_ms

    def assert_real_time(self) -> None:
        step = self.frame_samples / self.sample_rate
        for k, t in enumerate(self.released):
            audio_end = self.t_start + (k + 1) * step
            if t < audio_end - PACING_TOLERANCE_S:
                raise PacingError(
                    f"frame {k} was delivered {1000 * (audio_end - t):.1f} ms before its audio had elapsed"
                )

    def lead_ms(self) -> float:
        """The largest amount by which a frame beat real time, in ms (negative: always behind)."""
        if not self.released:
            return 0.0
        step = self.frame_samples / self.sample_rate
        return 1000 * max(self.t_start + (k + 1) * step - t for k, t in enumerate(self.released))
