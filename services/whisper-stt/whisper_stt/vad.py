"""webrtcvad over 16 kHz audio: per-frame voicing, the utterance segmenter of a stream, its recent audio."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import webrtcvad

from sidecar_common.pcm import float_to_pcm16

SAMPLE_RATE = 16000
FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000


def voiced_frames(audio: np.ndarray, *, aggressiveness: int) -> np.ndarray:
    """One bool per whole 30 ms frame of float32 16 kHz audio."""
    vad = webrtcvad.Vad(aggressiveness)
    n = len(audio) // FRAME_SAMPLES
    pcm = float_to_pcm16(audio[: n * FRAME_SAMPLES])
    step = FRAME_SAMPLES * 2
    return np.array(
        [vad.is_speech(pcm[i * step : (i + 1) * step], SAMPLE_RATE) for i in range(n)], dtype=bool
    )


def voiced_seconds(flags: np.ndarray, start_s: float, end_s: float) -> float:
    first = max(int(start_s * 1000) // FRAME_MS, 0)
    last = max(int(np.ceil(end_s * 1000 / FRAME_MS)), first)
    return float(np.count_nonzero(flags[first:last])) * FRAME_MS / 1000


@dataclass(frozen=True)
class SpeechStarted:
    start_s: float
    """Stream time of the first voiced frame."""
    detected_s: float
    """Stream time at which enough speech was heard to say so."""


@dataclass(frozen=True)
class SpeechEnded:
    end_s: float
    """Stream time just after the last voiced frame."""
    audio: np.ndarray
    """The utterance, from the pre-speech padding to a little after its last voiced frame."""
    reason: str
    """"end_of_speech" (enough silence) or "max_duration"."""
    first_sample: int = 0
    """Stream position (16 kHz samples) of `audio[0]`."""


@dataclass(frozen=True)
class SpeechPaused:
    """`pause_ms` of silence inside an utterance: it may end here, so its final can start now."""

    end_s: float
    """Stream time just after the last voiced frame."""
    audio: np.ndarray
    """The utterance so far, as `finish_utterance` would return it now (a shorter silent tail)."""
    first_sample: int


@dataclass(frozen=True)
class SpeechResumed:
    """A voiced frame after a `SpeechPaused`: the utterance goes on."""


class UtteranceSegmenter:
    """Turns a stream of 16 kHz audio into utterances, 30 ms frame by frame.

    Speech starts once `min_speech_ms` of the recent frames are voiced, and ends after
    `end_silence_ms` without a voiced frame. The audio of an utterance keeps `pre_speech_ms` of
    what came before the start, so the first phoneme is not cut.
    """

    def __init__(
        self,
        *,
        aggressiveness: int,
        min_speech_ms: int,
        end_silence_ms: int,
        pre_speech_ms: int,
        max_utterance_s: float,
        pause_ms: int = 0,
    ) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._start_frames = max(1, min_speech_ms // FRAME_MS)
        # A start needs most of a short look-back voiced, which tolerates one unvoiced frame.
        self._lookback: collections.deque[bool] = collections.deque(maxlen=self._start_frames + 1)
        self._end_frames = max(1, end_silence_ms // FRAME_MS)
        # 0: no pause events; otherwise at least one frame, and before the end of speech
        self._pause_frames = min(max(1, pause_ms // FRAME_MS), self._end_frames - 1) if pause_ms > 0 else 0
        self._pre_frames: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(pre_speech_ms // FRAME_MS, self._start_frames + 1)
        )
        self._max_frames = int(max_utterance_s * 1000 / FRAME_MS)
        self._tail_frames = 10  # keep 300 ms after the last voiced frame: word endings are quiet
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._utterance: list[np.ndarray] = []
        self._utterance_first_frame = 0
        self._silent_run = 0
        self._last_voiced_frame = 0
        self.in_speech = False
        self.start_s = 0.0

    @property
    def stream_s(self) -> float:
        """Stream time of the audio classified so far."""
        return self._frames_seen * FRAME_MS / 1000

    @property
    def speech_end_s(self) -> float:
        return (self._last_voiced_frame + 1) * FRAME_MS / 1000

    @property
    def utterance_first_sample(self) -> int:
        """Stream position (16 kHz samples) of the current utterance's first sample."""
        return self._utterance_first_frame * FRAME_SAMPLES

    def utterance_audio(self) -> np.ndarray:
        """The current utterance so far (for an interim)."""
        return np.concatenate(self._utterance) if self._utterance else np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> list[SpeechStarted | SpeechEnded | SpeechPaused | SpeechResumed]:
        """Feed 16 kHz float32 audio; returns the boundaries it crossed, in order."""
        events: list[SpeechStarted | SpeechEnded | SpeechPaused | SpeechResumed] = []
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n = len(data) // FRAME_SAMPLES
        for i in range(n):
            frame = data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            voiced = self._vad.is_speech(float_to_pcm16(frame), SAMPLE_RATE)
            index = self._frames_seen
            self._frames_seen += 1
            if not self.in_speech:
                self._pre_frames.append(frame)
                self._lookback.append(voiced)
                if sum(self._lookback) >= self._start_frames:
                    first_voiced = index - len(self._lookback) + 1 + self._lookback.index(True)
                    self.in_speech = True
                    self.start_s = first_voiced * FRAME_MS / 1000
                    self._utterance = list(self._pre_frames)
                    self._utterance_first_frame = index - len(self._pre_frames) + 1
                    self._pre_frames.clear()
                    self._lookback.clear()
                    self._silent_run = 0
                    self._last_voiced_frame = index
                    events.append(SpeechStarted(self.start_s, (index + 1) * FRAME_MS / 1000))
                continue
            self._utterance.append(frame)
            if voiced:
                if self._pause_frames and self._silent_run >= self._pause_frames:
                    events.append(SpeechResumed())
                self._silent_run = 0
                self._last_voiced_frame = index
            else:
                self._silent_run += 1
                if self._silent_run == self._pause_frames:
                    keep = self._last_voiced_frame - self._utterance_first_frame + 1 + self._silent_run
                    paused = np.concatenate(self._utterance[:keep])
                    events.append(SpeechPaused(self.speech_end_s, paused, self.utterance_first_sample))
            if self._silent_run >= self._end_frames:
                events.append(self._ended("end_of_speech"))
            elif len(self._utterance) >= self._max_frames:
                events.append(self._ended("max_duration"))
        self._pending = data[n * FRAME_SAMPLES :].copy()
        return events

    def _ended(self, reason: str) -> SpeechEnded:
        first_sample = self.utterance_first_sample
        return SpeechEnded(self.speech_end_s, self.finish_utterance(), reason, first_sample)

    def finish_utterance(self) -> np.ndarray:
        """End the current utterance now (end of speech or a flush) and return its audio."""
        keep = self._last_voiced_frame - self._utterance_first_frame + 1 + self._tail_frames
        frames = self._utterance[: max(keep, 0)] if self.in_speech else []
        self._utterance = []
        self.in_speech = False
        self._silent_run = 0
        self._lookback.clear()
        self._pre_frames.clear()
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)


class AudioHistory:
    """The last `seconds` of a stream's 16 kHz audio, addressed by stream position (in samples)."""

    def __init__(self, *, seconds: float) -> None:
        self._buffer = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
        self.end = 0
        """Stream position just after the last sample pushed."""

    @property
    def start(self) -> int:
        """The oldest stream position still held."""
        return max(0, self.end - len(self._buffer))

    def push(self, audio: np.ndarray) -> None:
        size = len(self._buffer)
        kept = audio[-size:]
        at = (self.end + len(audio) - len(kept)) % size
        first = min(len(kept), size - at)
        self._buffer[at : at + first] = kept[:first]
        self._buffer[: len(kept) - first] = kept[first:]
        self.end += len(audio)

    def between(self, start: int, end: int) -> np.ndarray:
        """Samples from `start` to `end` (stream positions); raises ValueError if no longer held."""
        if start < self.start or end > self.end or start > end:
            raise ValueError(f"audio {start}..{end} is not held ({self.start}..{self.end})")
        size = len(self._buffer)
        at = start % size
        if at + end - start <= size:
            return self._buffer[at : at + end - start].copy()
        return np.concatenate([self._buffer[at:], self._buffer[: at + end - start - size]])
