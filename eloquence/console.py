"""`eloquence console`: talk to the coach with this machine's microphone and speaker.

The same AgentSession as the worker and `eloquence talk`, with sounddevice (PortAudio) as its
audio I/O. Where there is no sound device, or no PortAudio, it says so and exits with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import utils
from livekit.agents.voice import io

INPUT_RATE = 16000
OUTPUT_RATE = 24000
BLOCK_S = 0.02


class NoSoundDeviceError(RuntimeError):
    """No usable microphone or speaker here; the message says why and what to do."""


def find_devices() -> tuple[Any, Any]:
    """(sounddevice module, (input, output) device info), or NoSoundDeviceError."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise NoSoundDeviceError(
            f"no sound system here ({e}). Install PortAudio (Debian: apt-get install libportaudio2) "
            "on a machine with a microphone and a speaker, or use `eloquence talk IN.wav` instead."
        ) from None
    try:
        return sd, (sd.query_devices(kind="input"), sd.query_devices(kind="output"))
    except Exception as e:  # PortAudio reports "no device" in several ways
        raise NoSoundDeviceError(
            f"no microphone or speaker found ({e}). Use `eloquence talk IN.wav` on this machine."
        ) from None


class MicrophoneInput(io.AudioInput):
    def __init__(self, sd: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(label="Microphone")
        self._loop = loop
        self._frames: utils.aio.Chan[rtc.AudioFrame] = utils.aio.Chan()
        self._stream = sd.InputStream(
            samplerate=INPUT_RATE,
            channels=1,
            dtype="int16",
            blocksize=int(INPUT_RATE * BLOCK_S),
            callback=self._on_audio,
        )

    def _on_audio(self, indata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        frame = rtc.AudioFrame(indata.tobytes(), INPUT_RATE, 1, frames)
        self._loop.call_soon_threadsafe(self._frames.send_nowait, frame)

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        self._stream.close()
        self._frames.close()

    async def __anext__(self) -> rtc.AudioFrame:
        return await self._frames.__anext__()


class SpeakerOutput(io.AudioOutput):
    """Plays frames as they come; a segment is finished when the speaker has played it all."""

    def __init__(self, sd: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            label="Speaker",
            next_in_chain=None,
            sample_rate=OUTPUT_RATE,
            capabilities=io.AudioOutputCapabilities(pause=False),
        )
        self._loop = loop
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._pushed = 0.0
        self._started = False
        self._drained = asyncio.Event()
        self._interrupted = False
        self._wait_task: asyncio.Task[None] | None = None
        self._stream = sd.OutputStream(
            samplerate=OUTPUT_RATE,
            channels=1,
            dtype="int16",
            blocksize=int(OUTPUT_RATE * BLOCK_S),
            callback=self._play,
        )

    def _play(self, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        with self._lock:
            n = min(len(self._buf), frames * 2)
            outdata[: n // 2, 0] = np.frombuffer(bytes(self._buf[:n]), dtype="<i2")
            outdata[n // 2 :, 0] = 0
            del self._buf[:n]
            empty = not self._buf
        if empty:
            self._loop.call_soon_threadsafe(self._drained.set)

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        self._stream.close()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._started:
            self._started, self._interrupted, self._pushed = True, False, 0.0
            self.on_playback_started(created_at=time.time())
        with self._lock:
            self._buf += frame.data.tobytes()
            self._drained.clear()
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._started:
            self._wait_task = asyncio.create_task(self._wait_for_playout())

    def clear_buffer(self) -> None:
        with self._lock:
            played = self._pushed - len(self._buf) / 2 / OUTPUT_RATE
            self._buf.clear()
        self._interrupted = True
        self._pushed = min(self._pushed, max(played, 0.0))
        self._loop.call_soon(self._drained.set)

    async def _wait_for_playout(self) -> None:
        await self._drained.wait()
        self._started = False
        self.on_playback_finished(playback_position=self._pushed, interrupted=self._interrupted)


async def _run(exercise_name: str) -> None:
    from .agent import CoachAgent, build_pipeline, build_session, default_turn_handling
    from .exercises import get_exercise
    from .settings import AppSettings

    sd, _ = find_devices()
    settings = AppSettings()
    exercise = get_exercise(exercise_name)
    lang = exercise.resolve_language(settings.language)
    loop = asyncio.get_running_loop()
    mic, speaker = MicrophoneInput(sd, loop), SpeakerOutput(sd, loop)
    pipeline = build_pipeline(settings, exercise, language=lang)
    session = build_session(
        settings=settings, pipeline=pipeline, turn_handling=default_turn_handling(settings, language=lang)
    )
    session.input.audio, session.output.audio = mic, speaker

    @session.on("conversation_item_added")
    def _show(ev: Any) -> None:
        role = getattr(ev.item, "role", "")
        if role in ("user", "assistant"):
            print(f"{'you' if role == 'user' else 'coach'}: {ev.item.text_content}", flush=True)

    mic.start()
    speaker.start()
    try:
        agent = CoachAgent(exercise=exercise, language=lang, greeting_tts=pipeline.greeting_tts)
        await session.start(agent=agent)
        print("Listening. Press Ctrl-C to stop.", flush=True)
        await asyncio.Event().wait()
    finally:
        mic.close()
        speaker.close()
        with contextlib.suppress(Exception):
            await session.aclose()
        await pipeline.aclose()


def main(args: argparse.Namespace) -> int:
    try:
        find_devices()
    except NoSoundDeviceError as e:
        print(f"eloquence console: {e}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_run(getattr(args, "exercise", None) or "default"))
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        print(f"eloquence console: {e}", file=sys.stderr)
        return 1
    return 0
