"""A WebRTC peer's tracks as the AgentSession's microphone and speaker.

- `TrackAudioInput`: the browser's microphone track (Opus decoded by aiortc, 48 kHz stereo),
  delivered to the session as 16 kHz mono frames, the rate `eloquence talk` feeds it.
- `PacedAudioOutput`: the agent's speech. `capture_frame` queues 20 ms frames; `ReplyTrack`,
  the track aiortc sends, takes one every 20 ms of wall-clock time, and the queue reports
  playback as the framework's `io.AudioOutput` contract asks: `playback_started` when a
  segment's first frame is sent, `playback_finished` (with the position reached) when its last
  frame has played or when `clear_buffer()` cut it short. `pause()` sends silence and keeps
  the queue, so a false interruption can resume where it stopped.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler
from livekit import rtc
from livekit.agents.voice import io

logger = logging.getLogger("eloquence.playground.audio")

INPUT_SAMPLE_RATE = 16000
OUTPUT_SAMPLE_RATE = 48000
FRAME_S = 0.02
_OUTPUT_FRAME = int(OUTPUT_SAMPLE_RATE * FRAME_S)  # 960 samples
_TIME_BASE = fractions.Fraction(1, OUTPUT_SAMPLE_RATE)
_MAX_QUEUED_S = 120.0
"""A bound on queued reply audio: minutes of speech are never needed, a runaway producer is a bug."""


class TrackAudioInput(io.AudioInput):
    """The remote microphone track as 16 kHz mono `rtc.AudioFrame`s, one every 20 ms.

    A browser sends nothing while its track is muted or silent at the source (a Web Audio
    stream, Opus DTX); the VAD would then never hear the silence that ends a turn. A frame that
    is `gap_s` late is therefore replaced by 20 ms of silence, and so on every 20 ms until audio
    comes again: the session hears a continuous microphone, as it does from a LiveKit room.
    """

    def __init__(
        self, track: MediaStreamTrack, *, sample_rate: int = INPUT_SAMPLE_RATE, gap_s: float = 0.1
    ) -> None:
        super().__init__(label="WebRTC")
        self._track = track
        self._rate = sample_rate
        self._gap_s = gap_s
        self._resampler = AudioResampler(format="s16", layout="mono", rate=sample_rate)
        self._pending: deque[rtc.AudioFrame] = deque()
        self._recv: asyncio.Future[Any] | None = None
        self._due: float | None = None  # when the next frame is expected
        self._filling = False
        self._silence = bytes(int(sample_rate * FRAME_S) * 2)
        self.frames_received = 0
        self.silence_frames = 0

    async def __anext__(self) -> rtc.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._due is None:
            self._due = loop.time() + FRAME_S
        while not self._pending:
            if self._recv is None:
                self._recv = asyncio.ensure_future(self._track.recv())
            wait = self._due - loop.time() + (0.0 if self._filling else self._gap_s)
            done, _ = await asyncio.wait({self._recv}, timeout=max(wait, 0.0))
            if not done:  # late: the microphone is silent for these 20 ms
                self._filling = True
                self._due += FRAME_S
                self.silence_frames += 1
                return rtc.AudioFrame(self._silence, self._rate, 1, len(self._silence) // 2)
            recv, self._recv = self._recv, None
            try:
                frame = recv.result()
            except MediaStreamError:
                raise StopAsyncIteration from None
            self.frames_received += 1
            self._filling = False
            self._due = loop.time() + FRAME_S
            assert isinstance(frame, AudioFrame)
            for out in self._resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1)
                if pcm.size:
                    self._pending.append(rtc.AudioFrame(pcm.tobytes(), self._rate, 1, pcm.size))
        return self._pending.popleft()

    def close(self) -> None:
        if self._recv is not None:
            self._recv.cancel()


@dataclass
class _Segment:
    """One flush-delimited stretch of speech, as the framework counts segments."""

    queued: int = 0
    """Frames still waiting to be sent."""
    played_s: float = 0.0
    pushed_s: float = 0.0
    started: bool = False
    flushed: bool = False
    interrupted: bool = False
    finished: bool = False


class PacedAudioOutput(io.AudioOutput):
    """The agent's speaker on a WebRTC peer: a real-time queue drained by `ReplyTrack`."""

    def __init__(self) -> None:
        super().__init__(
            label="WebRTC",
            next_in_chain=None,
            sample_rate=OUTPUT_SAMPLE_RATE,
            capabilities=io.AudioOutputCapabilities(pause=True),
        )
        self._queue: deque[tuple[_Segment, bytes]] = deque()
        self._partial = b""  # audio short of a whole 20 ms frame, waiting for more
        self._current: _Segment | None = None  # the segment being captured
        self._unfinished: list[_Segment] = []  # captured, playback_finished not yet reported
        self._paused = False
        self.track = ReplyTrack(self)

    @property
    def queued_s(self) -> float:
        return len(self._queue) * FRAME_S

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if frame.sample_rate != OUTPUT_SAMPLE_RATE:  # the framework resamples; this is a guard
            raise ValueError(f"expected {OUTPUT_SAMPLE_RATE} Hz audio, got {frame.sample_rate} Hz")
        samples = np.frombuffer(frame.data, dtype="<i2")
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype("<i2")
        if self._current is None:
            self._current = _Segment()
            self._unfinished.append(self._current)
        segment = self._current
        if segment.interrupted:  # cleared: the rest of this segment is not played
            return
        data = self._partial + samples.tobytes()
        whole = len(data) // (_OUTPUT_FRAME * 2) * (_OUTPUT_FRAME * 2)
        self._partial = data[whole:]
        if self.queued_s > _MAX_QUEUED_S:
            logger.warning("reply audio queue over %.0f s; dropping a frame", _MAX_QUEUED_S)
            return
        for start in range(0, whole, _OUTPUT_FRAME * 2):
            self._queue.append((segment, data[start : start + _OUTPUT_FRAME * 2]))
            segment.queued += 1
            segment.pushed_s += FRAME_S

    def flush(self) -> None:
        super().flush()
        segment, self._current = self._current, None
        if segment is None:
            return
        if self._partial:  # the tail: pad to a whole frame
            self._queue.append((segment, self._partial.ljust(_OUTPUT_FRAME * 2, b"\0")))
            segment.queued += 1
            segment.pushed_s += FRAME_S
            self._partial = b""
        segment.flushed = True
        if segment.queued == 0:  # played out already (or cleared): report on the next loop turn
            asyncio.get_running_loop().call_soon(self._finish, segment)

    def clear_buffer(self) -> None:
        self._partial = b""
        while self._queue:
            segment, _ = self._queue.popleft()
            segment.queued -= 1
        for segment in list(self._unfinished):
            segment.interrupted = True
            if segment.flushed:
                self._finish(segment)
            # an unflushed segment is reported when the framework flushes it

    def pause(self) -> None:
        super().pause()
        self._paused = True

    def resume(self) -> None:
        super().resume()
        self._paused = False

    def next_frame(self) -> bytes | None:
        """The next 20 ms to send (called by the track once per frame), or None for silence."""
        if self._paused or not self._queue:
            return None
        segment, pcm = self._queue.popleft()
        segment.queued -= 1
        if not segment.started:
            segment.started = True
            self.on_playback_started(created_at=time.time())
        segment.played_s += FRAME_S
        if segment.queued == 0 and segment.flushed:
            # its last frame is being sent: it has played once its 20 ms have gone by
            asyncio.get_running_loop().call_later(FRAME_S, self._finish, segment)
        return pcm

    def _finish(self, segment: _Segment) -> None:
        if segment.finished:
            return
        segment.finished = True
        self._unfinished.remove(segment)
        self.on_playback_finished(playback_position=segment.played_s, interrupted=segment.interrupted)

    def aclose(self) -> None:
        """The peer is gone: whatever is queued will never play."""
        self.clear_buffer()
        self.track.stop()


class ReplyTrack(MediaStreamTrack):
    """The audio track aiortc sends: one 20 ms frame per 20 ms of wall-clock time."""

    kind = "audio"

    def __init__(self, output: PacedAudioOutput) -> None:
        super().__init__()
        self._output = output
        self._start: float | None = None
        self._pts = 0
        self._silence = bytes(_OUTPUT_FRAME * 2)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            # frame n is due at start + n·20 ms: sleeping to the schedule, not per frame, does not drift
            delay = self._start + self._pts / OUTPUT_SAMPLE_RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5:  # the loop stalled: restart the clock instead of bursting
                self._start = loop.time() - self._pts / OUTPUT_SAMPLE_RATE
        pcm = self._output.next_frame() or self._silence
        frame = AudioFrame(format="s16", layout="mono", samples=_OUTPUT_FRAME)
        frame.planes[0].update(pcm)
        frame.sample_rate = OUTPUT_SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        self._pts += _OUTPUT_FRAME
        return frame
