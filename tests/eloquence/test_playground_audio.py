"""The playground's WebRTC audio and data channel, without a browser.

`PacedAudioOutput` is driven as aiortc drives it (its track's `recv()`, one frame per call) and as
the framework drives it (`capture_frame`, `flush`, `clear_buffer`, `pause`, `resume`); the data
channel test connects two real aiortc peers in this process.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent

from eloquence.client_messages import ClientMessages
from eloquence.playground.audio import (
    FRAME_S,
    OUTPUT_SAMPLE_RATE,
    PacedAudioOutput,
    TrackAudioInput,
)
from eloquence.playground.host import DataChannelSink, _include_loopback_when_alone

FRAME = int(OUTPUT_SAMPLE_RATE * FRAME_S)


def _tone(seconds: float, *, level: int = 3000) -> np.ndarray:
    n = int(round(seconds * OUTPUT_SAMPLE_RATE))
    return (np.sin(np.arange(n) * 2 * np.pi * 220 / OUTPUT_SAMPLE_RATE) * level).astype("<i2")


async def _capture(output: PacedAudioOutput, samples: np.ndarray, chunk: int = 1200) -> None:
    # 25 ms chunks: not a whole number of the track's 20 ms frames
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        await output.capture_frame(rtc.AudioFrame(part.tobytes(), OUTPUT_SAMPLE_RATE, 1, len(part)))


class _Events:
    def __init__(self, output: PacedAudioOutput) -> None:
        self.started = 0
        self.finished: list[PlaybackFinishedEvent] = []
        output.on("playback_started", lambda ev: setattr(self, "started", self.started + 1))
        output.on("playback_finished", self.finished.append)


async def _pull(output: PacedAudioOutput, frames: int) -> list[np.ndarray]:
    pulled = []
    for _ in range(frames):
        frame = await output.track.recv()
        assert frame.sample_rate == OUTPUT_SAMPLE_RATE and frame.samples == FRAME
        pulled.append(frame.to_ndarray().reshape(-1))
    return pulled


async def test_a_segment_plays_whole_and_reports_where_it_ended() -> None:
    output = PacedAudioOutput()
    events = _Events(output)
    audio = _tone(0.31)
    await _capture(output, audio)
    output.flush()

    pulled = await _pull(output, 17)  # 16 frames of audio (the tail padded), then silence
    played = np.concatenate(pulled)
    assert np.array_equal(played[: len(audio)], audio)
    assert not played[len(audio) :].any()
    finished = await asyncio.wait_for(output.wait_for_playout(), 2)
    assert events.started == 1
    assert finished.interrupted is False
    assert finished.playback_position == pytest.approx(16 * FRAME_S)


async def test_the_track_timestamps_each_frame_20_ms_after_the_last() -> None:
    output = PacedAudioOutput()
    frames = [await output.track.recv() for _ in range(4)]
    assert [f.pts for f in frames] == [0, FRAME, 2 * FRAME, 3 * FRAME]
    assert frames[0].time_base == fractions.Fraction(1, OUTPUT_SAMPLE_RATE)


async def test_clear_buffer_stops_the_reply_where_it_was() -> None:
    output = PacedAudioOutput()
    await _capture(output, _tone(1.0))
    await _pull(output, 10)
    output.clear_buffer()  # the user spoke over the coach
    await _capture(output, _tone(0.2))  # late audio of the same segment is dropped
    output.flush()
    finished = await asyncio.wait_for(output.wait_for_playout(), 2)
    assert finished.interrupted is True
    assert finished.playback_position == pytest.approx(10 * FRAME_S)
    assert not any(f.any() for f in await _pull(output, 5))  # silence from then on


async def test_a_clear_right_after_the_flush_still_counts_as_an_interruption() -> None:
    # the framework's order when it cancels a reply: flush(), then clear_buffer()
    output = PacedAudioOutput()
    await _capture(output, _tone(0.5))
    await _pull(output, 3)
    output.flush()
    output.clear_buffer()
    finished = await asyncio.wait_for(output.wait_for_playout(), 2)
    assert finished.interrupted is True
    assert finished.playback_position == pytest.approx(3 * FRAME_S)


async def test_pause_sends_silence_and_resume_goes_on_where_it_stopped() -> None:
    output = PacedAudioOutput()
    assert output.can_pause
    audio = _tone(0.2)
    await _capture(output, audio)
    output.flush()
    first = await _pull(output, 4)
    output.pause()
    paused = await _pull(output, 5)
    output.resume()
    rest = await _pull(output, 6)
    assert not any(f.any() for f in paused)
    assert np.array_equal(np.concatenate(first + rest), audio)
    finished = await asyncio.wait_for(output.wait_for_playout(), 2)
    assert finished.interrupted is False and finished.playback_position == pytest.approx(0.2)


async def test_a_frame_at_another_rate_is_refused() -> None:
    output = PacedAudioOutput()
    with pytest.raises(ValueError, match="48000 Hz"):
        await output.capture_frame(rtc.AudioFrame(bytes(320 * 2), 16000, 1, 320))


class _StereoTrack(MediaStreamTrack):
    """What aiortc's Opus decoder hands over: 20 ms of 48 kHz stereo s16."""

    kind = "audio"

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.left = frames
        self.pts = 0

    async def recv(self) -> AudioFrame:
        if self.left == 0:
            raise MediaStreamError
        self.left -= 1
        tone = _tone(FRAME_S)
        frame = AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = OUTPUT_SAMPLE_RATE, self.pts
        frame.time_base = fractions.Fraction(1, OUTPUT_SAMPLE_RATE)
        self.pts += FRAME
        return frame


async def test_the_microphone_track_reaches_the_session_as_16_khz_mono() -> None:
    mic = TrackAudioInput(_StereoTrack(frames=50))
    frames = [frame async for frame in mic]
    assert {(f.sample_rate, f.num_channels) for f in frames} == {(16000, 1)}
    total = sum(f.samples_per_channel for f in frames)
    assert 16000 - 400 <= total <= 16000  # one second in; the resampler may hold back a few ms
    samples = np.concatenate([np.frombuffer(f.data, dtype="<i2") for f in frames])
    assert np.abs(samples).max() > 2000  # the tone, not silence


class _QuietTrack(_StereoTrack):
    """Sends `frames`, then nothing for `quiet_s` (a muted or silent browser track), then `frames`."""

    def __init__(self, frames: int, quiet_s: float) -> None:
        super().__init__(frames=2 * frames)
        self.half, self.quiet_s = frames, quiet_s

    async def recv(self) -> AudioFrame:
        if self.left == self.half:
            self.half = -1
            await asyncio.sleep(self.quiet_s)
        return await super().recv()


async def test_a_silent_track_still_gives_the_session_a_continuous_microphone() -> None:
    mic = TrackAudioInput(_QuietTrack(frames=10, quiet_s=0.6))
    frames = [frame async for frame in mic]
    loud = [bool(np.frombuffer(f.data, dtype="<i2").any()) for f in frames]
    first_gap, last_gap = loud.index(False), len(loud) - 1 - loud[::-1].index(False)
    assert all(loud[:first_gap]) and all(loud[last_gap + 1 :])  # the tone, silence, the tone
    assert not any(loud[first_gap : last_gap + 1])
    assert mic.silence_frames == last_gap - first_gap + 1 > 0
    silent = frames[first_gap]
    assert (silent.sample_rate, silent.num_channels, silent.samples_per_channel) == (16000, 1, 320)


async def test_client_messages_reach_the_peer_over_the_data_channel() -> None:
    _include_loopback_when_alone()
    page, host = RTCPeerConnection(), RTCPeerConnection()
    received: list[dict[str, Any]] = []
    got_all = asyncio.Event()
    channel = page.createDataChannel("eloquence")

    @channel.on("message")
    def on_message(message: str) -> None:
        received.append(json.loads(message))
        if len(received) == 3:
            got_all.set()

    sink = DataChannelSink()
    host.on("datachannel", sink.attach)
    try:
        await page.setLocalDescription(await page.createOffer())
        await host.setRemoteDescription(page.localDescription)
        await host.setLocalDescription(await host.createAnswer())
        await page.setRemoteDescription(host.localDescription)

        messages = ClientMessages(sink=sink)
        # produced before the channel opens: the sink waits for it
        messages.transcription("how can I calm my nerves", final=True)
        messages.ai_response("Breathe slowly.")
        messages.metrics({"llm_ttft_ms": 120.0, "interrupted": False})
        await asyncio.wait_for(got_all.wait(), 30)
        await messages.aclose()
    finally:
        await page.close()
        await host.close()
    assert received == [
        {"type": "transcription", "text": "how can I calm my nerves", "final": True},
        {"type": "ai_response", "response": "Breathe slowly."},
        {"type": "metrics", "data": {"llm_ttft_ms": 120.0, "interrupted": False}},
    ]
